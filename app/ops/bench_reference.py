"""The benchmark's yardsticks: two MCP servers over the Pixazo simulator, as simple as they come.

- minimal (default): one shared aiohttp session, one tool that posts and returns the URL; no
  database, no downloads, no limits. What any MCP server costs at the least.
- plain keeper (`--keep DIR`): the same, then keeps the image the plain way: download it whole,
  decode it with Pillow, sha256, an fsync'd atomic write, a 512 px JPEG thumbnail, one aiosqlite
  row. What keeping images costs when written the obvious way; pixazo-mcp is measured against it.

    python -m app.ops.bench_reference --port 8300 --upstream http://127.0.0.1:8100 [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ImageContent, TextContent
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Mount

from app.pixazo.gateway import SDXL_PATH, request_headers


def keep_plainly(data: bytes, path: Path) -> tuple[str, bytes]:
    """Decode (the type check), hash, fsync'd atomic write, thumbnail: the obvious way, in one go."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        digest = hashlib.sha256(data).hexdigest()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        thumb = img.convert("RGB")
        thumb.thumbnail((512, 512))
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=80)
    return digest, out.getvalue()


def build(upstream: str, keep: Path | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            if keep is None:
                yield {"http": http}
                return
            await asyncio.to_thread(keep.mkdir, parents=True, exist_ok=True)
            async with aiosqlite.connect(keep / "keeper.db") as db:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("CREATE TABLE IF NOT EXISTS generations (id INTEGER PRIMARY KEY, prompt TEXT, "
                                 "url TEXT, path TEXT, bytes INTEGER, sha256 TEXT)")
                await db.commit()
                yield {"http": http, "db": db, "names": iter(range(1, 1 << 62))}

    mcp = MCPServer("reference", lifespan=lifespan)

    @mcp.tool()
    async def pix_generate(prompt: str, ctx: Context) -> Any:
        """Generate an image."""
        state: dict[str, Any] = ctx.request_context.lifespan_context
        http: aiohttp.ClientSession = state["http"]
        async with http.post(upstream + SDXL_PATH, json={"prompt": prompt}, headers=request_headers("ref")) as resp:
            url = str((await resp.json())["imageUrl"])
        if keep is None:
            return url
        async with http.get(url) as resp:
            data = await resp.read()
        path = keep / f"{next(state['names'])}.png"
        digest, thumb = await asyncio.to_thread(keep_plainly, data, path)
        db: aiosqlite.Connection = state["db"]
        await db.execute("INSERT INTO generations (prompt, url, path, bytes, sha256) VALUES (?, ?, ?, ?, ?)",
                         (prompt, url, str(path), len(data), digest))
        await db.commit()
        return [TextContent(type="text", text=f"Generated image: {url} (sha256 {digest})"),
                ImageContent(type="image", data=base64.b64encode(thumb).decode(), mime_type="image/jpeg")]

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
    parser.add_argument("--keep", type=Path, default=None, help="keep images the plain way in this directory")
    args = parser.parse_args()
    uvicorn.run(build(args.upstream, args.keep), host="127.0.0.1", port=args.port, log_level="warning",
                backlog=4096)


if __name__ == "__main__":
    main()
