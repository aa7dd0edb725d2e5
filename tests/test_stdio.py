"""`pixazo-mcp stdio` (issue 24): the same tools and resources over stdio, for one person on their own
machine: driven with the MCP SDK's stdio client (generate, history, a resource), and read raw to show
that stdout carries nothing but JSON-RPC."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import ImageContent

from tests.conftest import free_port


def stdio_env(tmp_path: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")},
            "PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
            "PIXAZO_SECRETS_DIR": str(tmp_path / "none"), "PIXAZO_PORT": str(free_port())}


async def test_the_sdk_stdio_client_generates_lists_and_reads_a_resource(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "stdio", "--demo"],
                                   env=stdio_env(tmp_path), cwd=str(tmp_path))
    async with Client(stdio_client(params)) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a lamp on a desk"})
        listed = await client.call_tool("list_generations", {})
        image = await client.read_resource(f"pixazo://generations/{made.structured_content['id']}/image")
        link = await client.call_tool("pix_upload_link", {})
        # Pixazo fetches inputs by URL and nothing here has an address: refused before anything is kept.
        brought = await client.call_tool("pix_upscale", {"image": "data:image/png;base64," + base64.b64encode(
            (tmp_path / "images").rglob("*.png").__next__().read_bytes()).decode()})
    assert not made.is_error, made.content
    assert any(isinstance(c, ImageContent) for c in made.content)
    assert [g["id"] for g in listed.structured_content["generations"]] == [made.structured_content["id"]]
    assert image.contents[0].mime_type == "image/png"
    assert link.is_error
    assert "need the HTTP server" in link.content[0].text  # type: ignore[union-attr]
    assert "https URL" in link.content[0].text  # type: ignore[union-attr]
    assert brought.is_error
    assert "Pixazo fetches input images by URL" in brought.content[0].text  # type: ignore[union-attr]
    assert "Nothing was recorded or sent to Pixazo." in brought.content[0].text  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "pixazo.db") as conn:
        assert conn.execute("SELECT caller, status FROM generations").fetchall() == [("local", "SUCCESS")]


async def test_stdout_carries_only_json_rpc(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "stdio", "--demo", env=stdio_env(tmp_path), cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pix_generate",
                                                                        "arguments": {"prompt": "a cup"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    lines: list[str] = []
    for message in messages:
        proc.stdin.write((json.dumps(message) + "\n").encode())
        await proc.stdin.drain()
        if "id" in message:
            while True:
                raw = await asyncio.wait_for(proc.stdout.readline(), 60)
                lines.append(raw.decode())
                if json.loads(raw).get("id") == message["id"]:
                    break
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)
    rest = (await proc.stdout.read()).decode()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    for line in [*lines, *rest.splitlines()]:
        assert json.loads(line)["jsonrpc"] == "2.0"  # every stdout line is a JSON-RPC message
    assert "demo mode" in stderr  # the logs went to stderr
    generated = json.loads(lines[1])
    assert generated["result"]["structuredContent"]["status"] == "SUCCESS"


CLIENTS = Path(__file__).parent / "clients"
INSPECTOR = CLIENTS / "node_modules" / ".bin" / "mcp-inspector"


def inspector() -> Path:
    """The official Inspector's CLI, pinned in tests/clients (installed on first use, as .ci/run would)."""
    import shutil

    import pytest

    if not INSPECTOR.exists():
        if shutil.which("npm") is None:
            if os.environ.get("CI"):
                pytest.fail("npm is needed for the Inspector CLI")
            pytest.skip("needs npm to install the pinned Inspector (tests/clients)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CLIENTS,  # noqa: S607
                       check=True, timeout=300)
    return INSPECTOR


async def test_the_inspector_cli_drives_it_over_stdio(tmp_path: Path) -> None:
    env = stdio_env(tmp_path)
    passed = [arg for name in ("PIXAZO_DB_PATH", "PIXAZO_IMAGE_DIR", "PIXAZO_SECRETS_DIR", "PIXAZO_PORT")
              for arg in ("-e", f"{name}={env[name]}")]
    command = [str(await asyncio.to_thread(inspector)), "--cli", *passed, sys.executable, "-m", "app.cli", "stdio",
               "--demo"]

    def run(*args: str) -> dict[str, object]:
        done = subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout))

    listed = await asyncio.to_thread(run, "--method", "tools/list")
    made = await asyncio.to_thread(run, "--method", "tools/call", "--tool-name", "pix_generate",
                                   "--tool-arg", "prompt=a cup of tea")
    names = {tool["name"] for tool in listed["tools"]}  # type: ignore[attr-defined]
    assert {"pix_generate", "pix_wait", "list_generations"} <= names
    assert made["structuredContent"]["status"] == "SUCCESS"  # type: ignore[index]
    with sqlite3.connect(tmp_path / "pixazo.db") as conn:
        assert conn.execute("SELECT caller, prompt FROM generations").fetchall() == [("local", "a cup of tea")]


async def test_the_server_and_each_tool_family_have_an_icon(tmp_path: Path) -> None:
    """Issue 24: icons as data URIs (VS Code shows them), each a well-formed SVG."""
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote

    from tests.conftest import in_memory_client, make_settings

    async with in_memory_client(make_settings(tmp_path)) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    # serverInfo, as the SDK stamps it on every result (both protocol eras carry it there).
    info = listed.meta["io.modelcontextprotocol/serverInfo"]  # type: ignore[index]
    icons = {name: tool.icons[0].src for name, tool in tools.items() if tool.icons}
    assert set(icons) >= {"pix_generate", "pix_upscale", "list_generations", "pix_wait", "pix_upload_link"}
    assert icons["pix_generate"] == icons["pix_regenerate"] != icons["pix_upscale"] == icons["pix_inpaint"]
    assert info["icons"][0]["src"].startswith("data:image/svg+xml,")
    for src in {*icons.values(), info["icons"][0]["src"]}:
        assert src.startswith("data:image/svg+xml,")
        assert "#" not in src  # a raw '#' would end the URI (a fragment)
        assert ET.fromstring(unquote(src.split(",", 1)[1])).tag.endswith("svg")  # noqa: S314 - our own SVG
