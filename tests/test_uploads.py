"""The caller's own images (issue 22): one-time upload links, data: URIs, ChatGPT's file parameters and
the gallery's upload, against a real server process. Pixazo (the simulator, which fetches inputs as
Pixazo does) must receive exactly the uploaded bytes; every refusal leaves nothing kept."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image
from playwright.async_api import Browser

from app.pixazo.gateway import EDITORS
from app.pixazo.simulator import Simulator
from tests.conftest import TEST_KEY, free_port, needs_chromium
from tests.test_oauth_cimd import DocumentServer, docs  # docs: a fixture (an https server, a test CA)
from tests.test_process import server_process

pytestmark = pytest.mark.timeout(180)

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
UPSCALE = EDITORS["upscale"].path


def photo(width: int = 640, height: int = 480, fmt: str = "JPEG") -> bytes:
    """A real photo-like image (a gradient with noise), as a person's file would be."""
    img = Image.effect_noise((width, height), 64).convert("RGB")
    out = io.BytesIO()
    img.save(out, format=fmt, quality=90) if fmt == "JPEG" else img.save(out, format=fmt)
    return out.getvalue()


def db_rows(db: Path, where: str = "1=1") -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM generations WHERE {where} ORDER BY id")]  # noqa: S608


def stored_files(tmp_path: Path) -> list[Path]:
    images = tmp_path / "images"
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


@asynccontextmanager
async def served(tmp_path: Path, sim: Simulator, **env: str) -> AsyncIterator[tuple[str, Client, Client]]:
    port = free_port()
    values = {"PIXAZO_AUTH_TOKENS": f"alice:{ALICE},bob:{BOB}", "PIXAZO_PUBLIC_URL": f"http://127.0.0.1:{port}",
              "PIXAZO_HISTORY_VISIBILITY": "own", "PIXAZO_POLL_BASE_S": "0.05", "PIXAZO_POLL_CAP_S": "0.2",
              "PIXAZO_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024), **env}
    async with (
        server_process(tmp_path, sim, port=port, **values) as (_, url),
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=60) as a,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=60) as b,
        Client(streamable_http_client(url + "/mcp", http_client=a)) as alice,
        Client(streamable_http_client(url + "/mcp", http_client=b)) as bob,
    ):
        yield url, alice, bob


async def link(client: Client) -> dict[str, Any]:
    made = await client.call_tool("pix_upload_link", {})
    assert not made.is_error, made.content
    return dict(made.structured_content or {})


async def test_a_link_takes_one_put_and_pixazo_receives_exactly_those_bytes(tmp_path: Path) -> None:
    data = photo()
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim) as (url, alice, bob):
        given = await link(alice)
        assert given["upload_url"].startswith(f"{url}/upload/")
        (pending,) = db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")
        assert (pending["status"], pending["operation"], pending["caller"]) == ("PENDING", "upload", "alice")
        async with httpx2.AsyncClient(timeout=30) as anyone:  # the person: no credentials
            put = await anyone.put(given["upload_url"], content=data, headers={"Content-Type": "image/jpeg"})
            again = await anyone.put(given["upload_url"], content=data)
        waited = await alice.call_tool("pix_wait", {"id": given["id"]})
        upscaled = await alice.call_tool("pix_upscale", {"image": given["id"]})
        others = await bob.call_tool("pix_upscale", {"image": given["id"]})
        listed = await bob.call_tool("list_generations", {})
    assert put.status_code == 201, put.text
    assert put.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert again.status_code == 410
    assert not waited.is_error
    assert waited.structured_content["operation"] == "upload"
    (row,) = db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")
    assert (row["status"], row["caller"], row["cost_usd"]) == ("SUCCESS", "alice", 0)
    assert (row["image_sha256"], row["image_bytes"], row["image_mime"]) == (
        hashlib.sha256(data).hexdigest(), len(data), "image/jpeg")
    assert not upscaled.is_error, upscaled.content
    assert upscaled.structured_content["parent_id"] == given["id"]
    fetched = [f for f in sim.stats.fetches if "/signed/" in f["url"]]
    assert [f["sha256"] for f in fetched] == [hashlib.sha256(data).hexdigest()]  # exactly the uploaded bytes
    assert others.is_error  # another caller under `own` can neither see nor use it
    assert f"no generation with id {given['id']}" in others.content[0].text  # type: ignore[union-attr]
    assert given["id"] not in [g["id"] for g in listed.structured_content["generations"]]


async def test_bad_uploads_get_their_status_and_leave_nothing(tmp_path: Path) -> None:
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim) as (_url, alice, _):
        links = [await link(alice) for _ in range(4)]
        before = stored_files(tmp_path)
        bomb = io.BytesIO()
        Image.new("L", (20000, 20000)).save(bomb, format="PNG", optimize=True)  # 400 megapixels, small file
        png_head = photo(fmt="PNG")[:400]

        async def endless() -> AsyncIterator[bytes]:
            chunk = photo(fmt="PNG")
            sent = 0
            while sent < 50 * 1024 * 1024:  # far past the 2 MiB cap: the server must stop it early
                yield chunk
                sent += len(chunk)

        async with httpx2.AsyncClient(timeout=30) as anyone:
            text = await anyone.put(links[0]["upload_url"], content=b"just some text, not an image",
                                    headers={"Content-Type": "image/png"})
            started = time.monotonic()
            try:
                large = await anyone.put(links[1]["upload_url"], content=endless())
                large_status = large.status_code
            except httpx2.HTTPError:  # the server may close the connection while the client still sends
                large_status = 413
            large_s = time.monotonic() - started
            bombed = await anyone.put(links[2]["upload_url"], content=bomb.getvalue())
            cut = await anyone.put(links[3]["upload_url"], content=png_head)
            retried = await anyone.put(links[0]["upload_url"], content=photo())  # a refusal leaves the link usable
    assert text.status_code == 415
    assert "judged by the file's bytes" in text.json()["error"]
    assert large_status == 413
    assert large_s < 10
    assert bombed.status_code == 422
    assert "pixel limit" in bombed.json()["error"]
    assert cut.status_code == 422
    assert retried.status_code == 201
    rows = {r["id"]: r for r in db_rows(tmp_path / "pixazo.db")}
    assert [rows[links[i]["id"]]["status"] for i in (1, 2, 3)] == ["PENDING"] * 3
    assert [p for p in stored_files(tmp_path) if p not in before and str(links[0]["id"]) + "-" not in p.name] == []


async def test_an_expired_link_is_refused_and_its_row_ends_expired(tmp_path: Path) -> None:
    env = {"PIXAZO_UPLOAD_LINK_TTL_S": "1", "PIXAZO_LEASE_S": "1"}
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim, **env) as (_, alice, _bob):
        given = await link(alice)
        await asyncio.sleep(1.5)
        async with httpx2.AsyncClient(timeout=30) as anyone:
            late = await anyone.put(given["upload_url"], content=photo())
        deadline = time.monotonic() + 20
        while db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")[0]["status"] == "PENDING":
            assert time.monotonic() < deadline, "the row never ended EXPIRED"
            await asyncio.sleep(0.2)
    assert late.status_code == 410
    assert db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")[0]["status"] == "EXPIRED"


async def test_a_data_uri_becomes_an_upload_and_the_parent_of_the_edit(tmp_path: Path) -> None:
    data = photo(320, 240, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim) as (_, alice, _bob):
        edited = await alice.call_tool("pix_remove_background", {"image": uri})
        refused = await alice.call_tool("pix_remove_background", {"image": "data:image/png;base64,aGVsbG8="})
    assert not edited.is_error, edited.content
    parent = edited.structured_content["parent_id"]
    (upload,) = db_rows(tmp_path / "pixazo.db", f"id = {parent}")
    assert (upload["operation"], upload["image_sha256"]) == ("upload", hashlib.sha256(data).hexdigest())
    (row,) = db_rows(tmp_path / "pixazo.db", f"id = {edited.structured_content['id']}")
    assert str(parent) in row["parameters_json"]
    assert "base64" not in row["parameters_json"]  # the bytes are never recorded as the argument
    assert sim.stats.fetches[-1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert refused.is_error
    assert "PNG, JPEG or WebP" in refused.content[0].text  # type: ignore[union-attr]
    assert "Nothing was recorded or sent to Pixazo." in refused.content[0].text  # type: ignore[union-attr]


async def test_a_chatgpt_file_parameter_is_fetched_under_the_outbound_rules(
        tmp_path: Path, docs: tuple[DocumentServer, Path]) -> None:
    doc_server, ca_pem = docs
    data = photo()
    doc_server.documents["/file.jpg"] = data
    file_param = {"download_url": doc_server.url("/file.jpg"), "file_id": "file-abc", "mime_type": "image/jpeg",
                  "file_name": "me.jpg"}
    env = {"PIXAZO_OAUTH_CA_FILE": str(ca_pem), "PIXAZO_OAUTH_METADATA_LOOPBACK_HOSTS": "localhost"}
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim, **env) as (_, alice, _bob):
        tools = {t.name: t for t in (await alice.list_tools()).tools}
        edited = await alice.call_tool("pix_upscale", {"image": file_param})
        inward = await alice.call_tool("pix_upscale", {"image": {**file_param,
                                                                 "download_url": "https://127.0.0.1:1/x.jpg"}})
    assert tools["pix_upscale"].meta["openai/fileParams"] == ["image"]  # type: ignore[index]
    assert tools["pix_inpaint"].meta["openai/fileParams"] == ["image", "mask"]  # type: ignore[index]
    assert not edited.is_error, edited.content
    (upload,) = db_rows(tmp_path / "pixazo.db", f"id = {edited.structured_content['parent_id']}")
    assert (upload["operation"], upload["image_sha256"]) == ("upload", hashlib.sha256(data).hexdigest())
    assert sim.stats.fetches[-1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert inward.is_error  # 127.0.0.1 is not a host the tests named: no connection is made
    assert "could not be fetched" in inward.content[0].text  # type: ignore[union-attr]


@needs_chromium
async def test_the_upload_page_posts_a_file_from_a_phone(tmp_path: Path, browser: Browser) -> None:
    data = photo()
    (tmp_path / "me.jpg").write_bytes(data)
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim) as (url, alice, _bob):
        given = await link(alice)
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await page.goto(given["upload_url"])
        shots = Path(os.environ.get("PIXAZO_SCREENSHOTS_DIR", tmp_path))
        await page.screenshot(path=str(shots / "upload-phone-picker.png"))
        await page.set_input_files("#file", str(tmp_path / "me.jpg"))
        await page.locator("#message.ok").wait_for()
        await page.screenshot(path=str(shots / "upload-phone-done.png"))
        done = await page.locator("#message").text_content()
        # The gallery's Upload button, signed in as alice, opens a fresh link's page.
        gallery = await browser.new_page()
        await gallery.goto(url + "/login")
        await gallery.fill("input[name=token]", ALICE)
        await gallery.click("button[type=submit]")
        await gallery.click("#upload")
        await gallery.wait_for_url(f"{url}/upload/**")
    assert done == f"Done: your image is uploaded as generation {given['id']}. You can go back to the chat."
    (row,) = db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")
    assert (row["status"], row["image_sha256"]) == ("SUCCESS", hashlib.sha256(data).hexdigest())
    assert len(db_rows(tmp_path / "pixazo.db", "operation = 'upload' AND caller = 'alice'")) == 2


async def test_pix_cancel_revokes_an_unused_link_and_pix_wait_says_it_waits_for_the_person(tmp_path: Path) -> None:
    async with Simulator(api_key=TEST_KEY) as sim, served(tmp_path, sim) as (_, alice, _bob):
        given = await link(alice)
        async with httpx2.AsyncClient(timeout=30) as http:
            page = await http.get(given["upload_url"], headers={"Accept": "text/html"})
            waited = await alice.call_tool("pix_wait", {"id": given["id"], "timeout_s": 0})
            cancelled = await alice.call_tool("pix_cancel", {"id": given["id"]})
            dead_page = await http.get(given["upload_url"], headers={"Accept": "text/html"})
            late = await http.put(given["upload_url"], content=photo())
    assert page.status_code == 200
    text = waited.content[0].text  # type: ignore[union-attr]
    assert "upload link not used yet" in text
    assert "pay" not in text
    assert "another server instance" not in text
    assert cancelled.content[0].text == (  # type: ignore[union-attr]
        f"Generation {given['id']} is cancelled: its upload link no longer works. Nothing was sent to Pixazo.")
    assert dead_page.status_code == 410
    assert "cancelled" in dead_page.text
    assert late.status_code == 410
    (row,) = db_rows(tmp_path / "pixazo.db", f"id = {given['id']}")
    assert (row["status"], row["image_path"]) == ("CANCELLED", None)
    assert stored_files(tmp_path) == []
