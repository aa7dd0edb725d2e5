"""Generation ids from callers: bounded to SQLite's rowids in the schemas, ASCII digits only in text."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx2
import pytest
from mcp import MCPError

from app.pixazo.simulator import Simulator
from app.storage.records import MAX_ID, parse_generation_id
from tests.conftest import http_client, in_memory_client, live_server, make_settings

TOO_BIG = 2**63  # one past SQLite's largest rowid


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", 1), ("007", 7), (str(MAX_ID), MAX_ID),
    (str(TOO_BIG), None), ("99999999999999999999", None), ("0", None), ("", None), (None, None),
    ("²", None), ("\u0661", None), ("1²", None), ("-1", None), ("+1", None), (" 1", None), ("1\n", None),
])
def test_parse_generation_id_accepts_only_ascii_digits_in_range(raw: str | None, expected: int | None) -> None:
    assert parse_generation_id(raw) == expected


async def test_out_of_range_ids_are_refused_by_the_schema_without_a_traceback(
        tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with in_memory_client(make_settings(tmp_path, sim.url, inline_image="none")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        await client.call_tool("pix_generate", {"prompt": "one"})
        too_big = await client.call_tool("get_generation", {"id": TOO_BIG})
        page = await client.call_tool("list_generations", {"before_id": 99999999999999999999})
        largest = await client.call_tool("get_generation", {"id": MAX_ID})
        below = await client.call_tool("list_generations", {"before_id": MAX_ID})
    assert tools["get_generation"].input_schema["properties"]["id"]["maximum"] == MAX_ID
    assert tools["get_generation"].input_schema["properties"]["id"]["minimum"] == 1
    before = tools["list_generations"].input_schema["properties"]["before_id"]
    assert str(MAX_ID) in str(before)
    for refused in (too_big, page):
        assert refused.is_error
        assert f"less than or equal to {MAX_ID}" in refused.content[0].text
    # the largest legal id is a plain "not found", and paging below it lists everything
    assert largest.is_error
    assert f"No generation with id {MAX_ID}." in largest.content[0].text
    assert [g["prompt"] for g in below.structured_content["generations"]] == ["one"]
    assert not [r for r in caplog.records if r.exc_info or "OverflowError" in r.getMessage()]


async def test_non_ascii_and_huge_ids_in_paths_are_404_never_500_or_another_row(tmp_path: Path,
                                                                               sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with live_server(settings) as live:
        async with http_client(live) as client:
            made = await client.call_tool("pix_generate", {"prompt": "the only row"})
            assert made.structured_content["id"] == 1
            for uri in ("pixazo://generations/\u0661", "pixazo://generations/\u0661/image", "pixazo://generations/²/image",
                        f"pixazo://generations/{TOO_BIG}/image"):
                with pytest.raises(MCPError, match="Invalid generation id"):
                    await client.read_resource(uri)
            assert (await client.read_resource("pixazo://generations/1/image")).contents
        async with httpx2.AsyncClient(base_url=live.url) as http:
            answers = {path: (await http.get(path)).status_code for path in (
                "/images/²", "/gallery/²", "/images/\u0661", "/gallery/\u0661", "/images/\u0661/thumb",
                "/images/²/thumb",
                f"/images/{TOO_BIG}", f"/gallery/{TOO_BIG}", "/images/99999999999999999999999")}
            paged = await http.get("/gallery", params={"before": "99999999999999999999"})
            one = await http.get("/images/1")
    assert answers == dict.fromkeys(answers, 404)
    assert paged.status_code == 200
    assert "the only row" in paged.text  # an unusable `before` is ignored, not an error
    assert one.status_code == 200
