"""The MCPServer: tools, resources, and a lifespan that hands every request the shared AppState."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import InputRequiredResult
from pydantic import AnyHttpUrl

from app import __version__
from app.core.state import AppState, open_state
from app.core.styles import load_styles
from app.errors import NotFoundError
from app.identity.oauth import AuthorizationServer
from app.identity.tokens import SCOPE, TeamTokenVerifier, current_caller
from app.protocol.app import apps_extension
from app.protocol.calllog import ToolCallLog
from app.protocol.icons import icon
from app.protocol.results import generation_detail, state_of
from app.protocol.styles import style_prompt
from app.protocol.tools import all_tools
from app.settings import Settings
from app.storage.records import IMAGE_URI, parse_generation_id

INSTRUCTIONS = (
    "Generates images with Pixazo (Stable Diffusion XL). Call pix_generate with a prompt; "
    "a call takes 10-30 seconds and returns the image URL, a link to the stored copy "
    "(pixazo://generations/{id}/image) and a thumbnail. list_generations and get_generation "
    "search the history (get_generation shows what a generation was made from and what was made from "
    "it); pix_regenerate repeats a generation with some arguments changed."
)
# Any id segment: parse_generation_id decides what is an id (not `\d`, which matches U+0661 too).
IMAGE_URI_PATTERN = re.compile(re.escape(IMAGE_URI).replace(r"\{id\}", r"([^/]+)"))


@dataclass
class Runtime:
    """Where the web app puts the AppState it opened, so that every transport shares one."""

    state: AppState | None = None


class PixazoServer(MCPServer[AppState]):
    """MCPServer whose image resource carries each image's own MIME type.

    A resource template declares one MIME type for all its resources; stored images keep the type
    their bytes have, so reads of `pixazo://generations/{id}/image` are answered here.
    """

    async def read_resource(self, uri: Any, context: Context[AppState, Any] | None = None,
                            ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        match = IMAGE_URI_PATTERN.fullmatch(str(uri))
        if match is None or context is None:
            return await super().read_resource(uri, context)
        state = context.request_context.lifespan_context
        try:
            data, mime = await state.service.image_bytes(_parse_id(match[1]), current_caller())
        except NotFoundError as exc:
            raise ResourceError(str(exc)) from None
        return [ReadResourceContents(content=data, mime_type=mime)]


def build_server(settings: Settings, runtime: Runtime | None = None,
                 verifier: TeamTokenVerifier | None = None,
                 oauth: AuthorizationServer | None = None) -> PixazoServer:
    """The MCP server. Raises StylesFileError (one line, exit 2 from the command) on a bad styles file."""
    styles = load_styles(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        if runtime is not None and runtime.state is not None:
            yield runtime.state
            return
        # In-memory use (tests, stdio): own the resources for this server's lifetime.
        async with open_state(settings) as state:
            yield state

    server = PixazoServer(
        "pixazo-mcp",
        title="Pixazo image generation",
        instructions=INSTRUCTIONS,
        version=__version__,
        tools=all_tools(settings, styles),
        lifespan=lifespan,
        middleware=[ToolCallLog(settings.log_prompt_chars)],
        extensions=[apps_extension()],
        icons=[icon("server")],
        # With the authorization server on, /mcp takes its tokens and the team's static ones side by side.
        token_verifier=oauth.verifier(verifier) if oauth is not None else verifier,
        auth=oauth.auth_settings() if oauth is not None else None if verifier is None else AuthSettings(
            # Required by the SDK's settings; never contacted: tokens are checked locally.
            issuer_url=AnyHttpUrl("https://pixazo-mcp.invalid"),
            resource_server_url=None,
            required_scopes=[SCOPE],
            validate_token_resource=False,
        ),
    )

    for style in styles.values():
        server.add_prompt(style_prompt(style))

    @server.resource("pixazo://generations/{id}", name="generation", title="A recorded generation",
                     mime_type="application/json")
    async def generation(id: str, ctx: Context) -> dict[str, Any]:
        """One generation's record: prompt, parameters, status, URLs, stored image details, and its
        lineage (parent and children) as get_generation shows it."""
        service, viewer = state_of(ctx).service, current_caller()
        try:
            gen = await service.get(_parse_id(id), viewer)
        except NotFoundError as exc:
            raise ResourceError(str(exc)) from None
        return (await generation_detail(service, gen, viewer)).model_dump(mode="json")

    @server.resource(IMAGE_URI, name="generation-image", title="A generated image",
                     mime_type="image/png")
    async def generation_image(id: str, ctx: Context) -> bytes:
        """The stored image (answered by PixazoServer.read_resource with the image's own MIME type)."""
        data, _ = await state_of(ctx).service.image_bytes(_parse_id(id), current_caller())
        return data

    return server


def _parse_id(raw: str) -> int:
    gen_id = parse_generation_id(raw)
    if gen_id is None:
        raise ResourceError(f"Invalid generation id {raw!r}.")
    return gen_id
