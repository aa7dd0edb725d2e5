"""The MCPServer: tools, resources, and a lifespan that hands every request the shared AppState."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer

from app import __version__
from app.settings import Settings
from app.state import AppState, open_state
from app.tools import all_tools

INSTRUCTIONS = (
    "Generates images with Pixazo (Stable Diffusion XL). Call pix_generate with a prompt; "
    "a call takes 10-30 seconds and returns the image URL."
)


@dataclass
class Runtime:
    """Where the web app puts the AppState it opened, so that every transport shares one."""

    state: AppState | None = None


def build_server(settings: Settings, runtime: Runtime | None = None) -> MCPServer[AppState]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        if runtime is not None and runtime.state is not None:
            yield runtime.state
            return
        # In-memory use (tests, stdio): own the resources for this server's lifetime.
        async with open_state(settings) as state:
            yield state

    return MCPServer(
        "pixazo-mcp",
        title="Pixazo image generation",
        instructions=INSTRUCTIONS,
        version=__version__,
        tools=all_tools(settings),
        lifespan=lifespan,
    )
