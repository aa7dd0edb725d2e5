"""Every image URL taken from Pixazo is http(s) before it is stored, returned or shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.errors import UpstreamProtocolError
from app.pixazo.gateway import image_url_from
from app.pixazo.simulator import Fault, Simulator
from tests.conftest import http_client, live_server, make_settings, rows

HOSTILE = "javascript:alert(document.cookie)"
SHAPES = {
    "imageUrl": lambda url: {"imageUrl": url},
    "output": lambda url: {"output": url},
    "output.media_url[0]": lambda url: {"output": {"media_url": [url], "media_type": "image"}},
}
BAD_URLS = [HOSTILE, "JavaScript:alert(1)", "data:image/png;base64,AAAA", "vbscript:msgbox(1)",
            "file:///etc/passwd", "https://", "//evil.example/x.png", " https://pub-x.r2.dev/a.png",
            "https://pub-x.r2.dev/a.png\njavascript:alert(1)", "https://pub-x.r2.dev/" + "a" * 3000]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("url", BAD_URLS)
def test_every_answer_shape_refuses_a_url_that_is_not_http(shape: str, url: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="not an http\\(s\\) URL") as info:
        image_url_from(SHAPES[shape](url))
    assert info.value.detail == url  # kept for the operators' column


@pytest.mark.parametrize("shape", SHAPES)
def test_every_answer_shape_accepts_an_https_url(shape: str) -> None:
    assert image_url_from(SHAPES[shape]("https://pub-x.r2.dev/a.png")) == "https://pub-x.r2.dev/a.png"


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_hostile_url_ends_the_call_with_a_clear_error_and_a_terminal_row(
        tmp_path: Path, sim: Simulator, shape: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", max_retries=0)
    sim.push(Fault(kind="http", status=200, body=json.dumps(SHAPES[shape](HOSTILE))))
    async with live_server(settings) as live, http_client(live) as client:
        result = await client.call_tool("pix_generate", {"prompt": "p"})
        got = await client.call_tool("get_generation", {"id": 1})
        async with httpx2.AsyncClient(base_url=live.url) as http:
            detail = await http.get("/gallery/1")
    assert result.is_error
    assert "Pixazo sent an answer the server could not use" in result.content[0].text
    assert "not an http(s) URL" in result.content[0].text
    (row,) = rows(settings.db_path)
    assert (row["status"], row["image_url"], row["image_path"]) == ("EXCEPTION", None, None)
    assert row["finished_at"] is not None
    assert HOSTILE in row["upstream_error"]  # operators can see what Pixazo sent
    for text in (result.content[0].text, json.dumps(got.structured_content), detail.text):
        assert "javascript:" not in text


async def test_a_nested_https_url_is_used(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    url = f"{sim.url}/images/made-elsewhere.png"  # not one the simulator made: the download fails
    sim.push(Fault(kind="http", status=200, body=json.dumps(SHAPES["output.media_url[0]"](url))))
    async with live_server(settings) as live, http_client(live) as client:
        result = await client.call_tool("pix_generate", {"prompt": "p"})
    assert result.structured_content["image_url"] == url
    assert rows(settings.db_path)[0]["status"] == "DOWNLOAD_FAILED"


async def test_old_rows_with_hostile_urls_are_neither_returned_nor_linked(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with live_server(settings) as live, http_client(live) as client:
        await client.call_tool("pix_generate", {"prompt": "a real one"})
        # A row written by an older version that did not check nested URLs.
        with sqlite3.connect(settings.db_path) as conn:
            conn.execute("INSERT INTO generations (timestamp, prompt, parameters_json, image_url, status)"
                         " VALUES ('2026-01-01T00:00:00Z', 'old', '{}', ?, 'SUCCESS')", (HOSTILE,))
        conn.close()
        got = await client.call_tool("get_generation", {"id": 2})
        listed = await client.call_tool("list_generations", {})
        resource = await client.read_resource("pixazo://generations/2")
        async with httpx2.AsyncClient(base_url=live.url) as http:
            old, good = await http.get("/gallery/2"), await http.get("/gallery/1")
    seen: list[Any] = [got.structured_content, listed.structured_content, resource.contents[0].text]  # type: ignore[union-attr]
    assert got.structured_content["image_url"] is None
    assert all("javascript:" not in json.dumps(item) for item in seen)
    assert old.status_code == 200
    assert "javascript:" not in old.text
    assert 'href="http://127.0.0.1' in good.text  # an http(s) URL is still a link
