"""Everyday use, as a new user meets it (issue 23): lean answers for an agent's context (sizes measured and
printed), refusals as one plain sentence, a demo that survives a restart, operator commands without
traps, a calmer gallery (in Chromium, with screenshots)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ImageContent
from PIL import Image
from playwright.async_api import Browser

from app.pixazo.simulator import Simulator
from tests.conftest import free_port, in_memory_client, live_server, make_settings, needs_chromium, without_xmp
from tests.test_instances import wait_healthy
from tests.test_startup import pixazo

TOOLS_LIST_BUDGET = 16 * 1024
THUMB_BUDGET = 40 * 1024


async def test_tools_list_fits_its_budget(tmp_path: Path) -> None:
    async with in_memory_client(make_settings(tmp_path)) as client:
        listed = await client.list_tools()
    wire = json.dumps(listed.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
    print(f"tools/list: {len(wire)} bytes for {len(listed.tools)} tools")
    assert len(wire) <= TOOLS_LIST_BUDGET
    for tool in listed.tools:
        assert tool.description, tool.name
        assert len(tool.description) <= 300, tool.name
        assert "title" not in json.dumps(tool.input_schema), tool.name  # pydantic's repeated names are gone
    image_tools = [t for t in listed.tools if (t.meta or {}).get("ui", {}).get("visibility") != ["app"]
                   and t.output_schema and "resource_uri" in t.output_schema["properties"]]
    assert {t.name for t in image_tools} >= {"pix_generate", "pix_upscale", "pix_remove_background", "pix_inpaint",
                                             "pix_outpaint", "pix_regenerate", "pix_wait"}


async def test_an_image_result_and_its_thumbnail_are_small(tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a lighthouse"})
    (thumb,) = [c for c in result.content if isinstance(c, ImageContent)]
    data = base64.b64decode(thumb.data)
    wire = len(result.model_dump_json(by_alias=True, exclude_none=True))
    print(f"image result: {wire} bytes, of which the thumbnail {len(data)} bytes")
    assert len(data) <= THUMB_BUDGET
    assert max(Image.open(io.BytesIO(data)).size) == 512
    assert wire <= 60 * 1024


async def test_list_generations_text_is_a_summary_and_statuses_are_forgiving(tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        for prompt in ("a fox", "a very long prompt about a lighthouse " * 4):
            await client.call_tool("pix_generate", {"prompt": prompt})
        listed = await client.call_tool("list_generations", {"status": "success"})
        unknown = await client.call_tool("list_generations", {"status": "done"})
    lines = listed.content[0].text.splitlines()  # type: ignore[union-attr]
    assert len(lines) == 2
    assert lines[1].startswith("#1 SUCCESS generate (sdxl, ")
    assert lines[1].endswith(": a fox")
    assert len(lines[0]) < 120  # a line, not the record
    assert [g["id"] for g in listed.structured_content["generations"]] == [2, 1]  # the data is in the structure
    assert unknown.is_error
    assert unknown.content[0].text.startswith("`status` must be one of BUDGET_EXCEEDED, CANCELLED, ")  # type: ignore[union-attr]


@pytest.mark.parametrize(("tool", "arguments", "text"), [
    ("pix_generate", {"prompt": "x", "width": 3},
     "`width` must be an integer from 512 to 1536, a multiple of 8. Nothing was recorded or sent to Pixazo."),
    ("pix_generate", {"prompt": "x", "model": "flux-schnell", "num_steps": 20},
     "`num_steps` must be an integer from 1 to 8 for flux-schnell. Nothing was recorded or sent to Pixazo."),
    ("pix_wait", {"id": 0},
     "`id`: input should be greater than or equal to 1. Nothing was recorded or sent to Pixazo."),
    ("pix_upscale", {"image": 5}, "`image`: no generation with id 5. Nothing was recorded or sent to Pixazo."),
    ("pix_generate", {"prompt": " \n\t "},
     "`prompt` must say something: it is only spaces. Nothing was recorded or sent to Pixazo."),
])
async def test_refusals_read_as_one_plain_sentence(tmp_path: Path, tool: str, arguments: dict[str, object],
                                                   text: str) -> None:
    async with in_memory_client(make_settings(tmp_path)) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert result.content[0].text == text  # type: ignore[union-attr]


def port_pair() -> int:
    """A free port whose next port is free too (the demo's simulator takes the server's port + 1)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


async def test_the_demo_survives_a_restart_and_never_talks_of_charges(tmp_path: Path) -> None:
    port = port_pair()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")},
           "PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
           "PIXAZO_SECRETS_DIR": str(tmp_path / "none"), "PIXAZO_POLL_BASE_S": "0.1", "PIXAZO_POLL_CAP_S": "0.3"}

    async def run_demo(name: str, calls: list[tuple[str, dict[str, object]]]) -> list[object]:
        with open(tmp_path / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--demo", "--port", str(port)],
                                    env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            await wait_healthy(proc, port, tmp_path / f"{name}.log")
            results = []
            async with (httpx2.AsyncClient(timeout=60) as http,
                        Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client):
                for tool, arguments in calls:
                    if tool == "fetch":  # what an image link serves now
                        results.append((await http.get(str(arguments["url"]))).content)
                        continue
                    if tool == "fail-next-job":  # the demo's simulator, told to fail the next queue job
                        await http.post(f"http://127.0.0.1:{port + 1}/_sim/faults",
                                        json={"job_faults": [{"state": "FAILED", "error": "bad input"}]})
                        continue
                    results.append(await client.call_tool(tool, arguments))
            return results
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    (made,) = await run_demo("first", [("pix_generate", {"prompt": "a harbour at dawn"})])
    gen_id = made.structured_content["id"]  # type: ignore[attr-defined]
    first_url = made.structured_content["image_url"]  # type: ignore[attr-defined]
    picture = io.BytesIO()
    Image.effect_noise((320, 240), 50).convert("RGB").save(picture, format="PNG")
    own = base64.b64encode(picture.getvalue()).decode()
    upscaled, failed, mine, served_again = await run_demo("second", [
        ("pix_upscale", {"image": gen_id}), ("fail-next-job", {}), ("pix_upscale", {"image": gen_id}),
        # an image the person brings: the demo's simulator fetches it at the server's loopback address
        ("pix_remove_background", {"image": f"data:image/png;base64,{own}"}), ("fetch", {"url": first_url})])
    assert not mine.is_error, mine.content  # type: ignore[attr-defined]
    # the restarted simulator serves the same bytes at the first image's link as before
    with sqlite3.connect(tmp_path / "pixazo.db") as conn:
        (kept,) = conn.execute("SELECT image_path FROM generations WHERE id = ?", (gen_id,)).fetchone()
    assert without_xmp((tmp_path / "images" / kept).read_bytes()) == served_again
    assert not upscaled.is_error, upscaled.content  # type: ignore[attr-defined]
    assert upscaled.structured_content["parent_id"] == gen_id  # type: ignore[attr-defined]
    assert failed.is_error  # type: ignore[attr-defined]
    text = failed.content[0].text  # type: ignore[attr-defined]
    assert "Pixazo's job failed" in text
    assert "charged" not in text
    with sqlite3.connect(tmp_path / "pixazo.db") as conn:
        assert "charged" not in " ".join(str(e) for (e,) in conn.execute("SELECT error FROM generations"))


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = pixazo(elsewhere, "oauth", "clients", PIXAZO_DB_PATH="data/pixazo.db")
    assert done.returncode == 2
    assert done.stderr == (f"pixazo-mcp oauth: no database at {elsewhere / 'data' / 'pixazo.db'} (set "
                           "PIXAZO_DB_PATH or PIXAZO_DATABASE_URL, or give --db)\n")
    assert not (elsewhere / "data").exists()


def test_backup_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    db = tmp_path / "pixazo.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE generations (id INTEGER PRIMARY KEY)")
    (tmp_path / "copy.db").write_text("an older backup")
    refused = pixazo(tmp_path, "backup", str(tmp_path / "copy.db"), "--db", str(db))
    forced = pixazo(tmp_path, "backup", str(tmp_path / "copy.db"), "--db", str(db), "--force")
    assert refused.returncode == 2
    assert refused.stderr == f"pixazo-mcp backup: {tmp_path / 'copy.db'} exists; give --force to replace it\n"
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "copy.db").read_bytes().startswith(b"SQLite format 3")


async def test_bench_url_takes_the_mcp_address_measures_upstream_and_fails_in_one_line(
        tmp_path: Path, sim: Simulator) -> None:
    sim.latency = 0.3
    async with live_server(make_settings(tmp_path, sim.url)) as live:
        done = await _run(tmp_path, "bench", "--url", live.mcp_url, "--calls", "6", "--concurrency", "3",
                          "--latency", "1")
    assert done.returncode == 0, done.stderr
    assert "upstream latency measured by the server: 3" in done.stderr  # about 300 ms, not the 1 s given
    row = next(line for line in done.stdout.splitlines() if line.startswith(f"| - | {live.url} "))
    assert "| not measured | not measured |" in row
    unreachable = pixazo(tmp_path, "bench", "--url", f"http://127.0.0.1:{free_port()}/mcp", "--calls", "2")
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert unreachable.stderr.startswith("pixazo-mcp bench: http://127.0.0.1:")
    assert "Traceback" not in unreachable.stderr


async def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(pixazo, tmp_path, *args)


@needs_chromium
async def test_the_gallery_is_calm_at_desktop_and_phone_width(tmp_path: Path, sim: Simulator,
                                                              browser: Browser) -> None:
    from app.pixazo.simulator import Fault

    shots = Path(os.environ.get("PIXAZO_SCREENSHOTS_DIR", tmp_path))
    settings = make_settings(tmp_path, sim.url, max_retries=0)
    async with live_server(settings) as live:
        async with httpx2.AsyncClient(timeout=60) as http, Client(streamable_http_client(
                live.mcp_url, http_client=http)) as client:
            made = await client.call_tool("pix_generate", {"prompt": "a red kite over a green hill"})
            await client.call_tool("pix_remove_background", {"image": made.structured_content["id"]})
            sim.push(Fault(kind="http", status=400, body=json.dumps({"error": "bad " * 200})))
            await client.call_tool("pix_generate", {"prompt": "a prompt Pixazo refuses"})
            # An edit of a URL (here one Pixazo cannot fetch) has no prompt to copy.
            await client.call_tool("pix_upscale", {"image": "https://127.0.0.1:1/cat.png"})
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(live.url + "/gallery")
        failed = page.locator(".card .error").first
        line = await failed.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
        height = (await failed.bounding_box() or {"height": 0})["height"]
        await page.screenshot(path=str(shots / "gallery-desktop.png"))
        await page.goto(live.url + "/gallery/2")
        checker = await page.locator("#full").get_attribute("class")
        created = await page.locator("time").first.text_content()
        await page.goto(live.url + "/gallery/3")
        copy_on_failed = await page.locator("#copy").count()
        await page.goto(live.url + "/gallery/4")
        copy_without_prompt = await page.locator("#copy").count()
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(live.url + "/gallery")
        await page.screenshot(path=str(shots / "gallery-phone.png"))
    assert height <= line * 1.5  # one line of Pixazo's long explanation, not fifteen
    assert checker == "checker"  # the cut-out shows on a checkerboard
    assert created is not None
    assert created.removesuffix(" UTC")[10] == " "  # 2026-12-02 10:27 UTC, as in the list
    assert copy_on_failed == 1  # a prompt to copy
    assert copy_without_prompt == 0  # an edit from a URL has none, and no button
