"""The least an MCP server over the Pixazo simulator can be: one shared aiohttp session, one tool that
posts and returns the URL; no database, no downloads, no limits. The benchmark's yardstick.

    python -m app.ops.bench_reference --port 8300 --upstream http://127.0.0.1:8100
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette
from starlette.routing import Mount

from app.pixazo.client import SDXL_PATH, request_headers


def build(upstream: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            yield {"http": http}

    mcp = MCPServer("reference", lifespan=lifespan)

    @mcp.tool()
    async def pix_generate(prompt: str, ctx: Context) -> str:
        """Generate an image."""
        http: aiohttp.ClientSession = ctx.request_context.lifespan_context["http"]
        async with http.post(upstream + SDXL_PATH, json={"prompt": prompt}, headers=request_headers("ref")) as resp:
            return str((await resp.json())["imageUrl"])

    inner = mcp.streamable_http_app()

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=[Mount("/", app=inner)], lifespan=app_lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.upstream), host="127.0.0.1", port=args.port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
