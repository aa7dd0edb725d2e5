"""The in-chat app (MCP Apps, `io.modelcontextprotocol/ui`): one `ui://pixazo/app` resource, the
`_meta.ui` stamp on the tools whose results it renders, and the app-only tools it calls.

The HTML is built from `app-ui/` (npm, esbuild) into one self-contained file shipped in this package;
CI rebuilds it and fails when it differs. Every image-making and history tool carries
`_meta.ui.resourceUri` always (Claude.ai does not always declare the extension, and a tool without the
stamp renders nothing there); no `_meta.ui.domain` is sent (a wrong one renders nothing on Claude).
Pixels reach the app only through this server: `pix_app_image` sends a display-size rendition (or
the thumbnail); the original goes only to a download, by its resource link.
"""

from __future__ import annotations

import base64
import binascii
from importlib.resources import files
from typing import Annotated, Any, Literal

from mcp.server.apps import Apps, ResourceCsp
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from app.core.masks import MAX_MASK_BYTES, MaskProblem, keep_mask
from app.errors import NotFoundError
from app.identity.tokens import current_caller
from app.protocol.editing import resolve_input, run_edit
from app.protocol.results import state_of, visible
from app.storage.records import MAX_ID, MIN_ID
from app.storage.renditions import THUMB_MIME

APP_URI = "ui://pixazo/app"
APP_HTML = "pixazo-app.html"
# The tools whose results the app renders: the image-making ones, pix_wait and the history tools.
RENDERED = ("pix_generate", "pix_upscale", "pix_remove_background", "pix_inpaint", "pix_outpaint",
            "pix_regenerate", "pix_wait", "list_generations", "get_generation")
APP_ONLY: dict[str, Any] = {"ui": {"resourceUri": APP_URI, "visibility": ["app"]}}
NOTHING_DONE = "Nothing was recorded or sent to Pixazo."


def app_html() -> str:
    return (files("app.protocol") / "ui" / APP_HTML).read_text(encoding="utf-8")


def apps_extension() -> Apps:
    apps = Apps()
    # No CSP domains: the app loads nothing from anywhere (its script and styles are inline).
    apps.add_html_resource(APP_URI, app_html(), name="pixazo-app", title="Pixazo images",
                           description="See, choose and edit the images of this conversation.",
                           csp=ResourceCsp(), prefers_border=False)
    return apps


def stamp(tools: list[Tool]) -> list[Tool]:
    """`_meta.ui.resourceUri` on every tool whose result the app renders."""
    for tool in tools:
        if tool.name in RENDERED:
            tool.meta = {**(tool.meta or {}), "ui": {"resourceUri": APP_URI}}
    return tools


class AppImage(BaseModel):
    id: int
    mime: str


async def pix_app_image(
    ctx: Context,
    id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)],
    size: Literal["thumb", "display"] = "display",
) -> CallToolResult:
    """(App only.) A stored image at display size, or its thumbnail."""
    state, gen = state_of(ctx), await visible(ctx, id)
    if not gen.image_path:
        raise ToolError(f"Generation {id} has no stored image ({gen.status}).")
    images = state.service.images
    if size == "thumb":
        data, mime = await images.thumbnail(gen.image_path), THUMB_MIME
    else:
        data, mime = await images.display(gen.image_path)
    return CallToolResult(content=[ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime)],
                          structured_content=AppImage(id=id, mime=mime).model_dump())


async def pix_app_inpaint(
    ctx: Context,
    image: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)],
    mask: Annotated[str, Field(max_length=MAX_MASK_BYTES * 4 // 3 + 4, description="base64 PNG")],
    prompt: Annotated[str, Field(min_length=1, max_length=2000)],
    wait: bool = False,
) -> CallToolResult:
    """(App only.) pix_inpaint with a mask painted in the app."""
    state, viewer = state_of(ctx), current_caller()
    try:
        painted = await state.service.get(image, viewer)
        data = base64.b64decode(mask, validate=True)
    except NotFoundError as exc:
        raise ToolError(f"{exc} {NOTHING_DONE}") from None
    except (binascii.Error, ValueError):
        raise ToolError(f"Invalid arguments: `mask` must be a base64 PNG. {NOTHING_DONE}") from None
    source = await resolve_input(ctx, "image", image)  # refuses an image Pixazo could not fetch, first
    try:
        kept = await keep_mask(state.service, painted, data, viewer)
    except MaskProblem as exc:
        raise ToolError(f"Invalid arguments: `mask`: {exc}. {NOTHING_DONE}") from None
    images = {"image": source, "mask": await resolve_input(ctx, "mask", kept.id)}
    result = await run_edit(ctx, "inpaint", {"prompt": prompt}, {}, images, "Inpainted image", wait, prompt=prompt)
    result.content.append(TextContent(type="text", text=f"The painted mask is generation {kept.id}."))
    return result


APP_TOOLS_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                        open_world_hint=True)


def app_tools() -> list[Tool]:
    return [
        Tool.from_function(pix_app_image, title="Image for the app", meta=APP_ONLY, annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)),
        Tool.from_function(pix_app_inpaint, title="Inpaint a painted area", meta=APP_ONLY,
                           annotations=APP_TOOLS_ANNOTATIONS),
    ]
