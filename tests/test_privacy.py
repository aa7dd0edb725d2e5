"""PIXAZO_HISTORY_VISIBILITY: `team` (default) shows every generation to every caller; `own` shows a
caller only its own, in the tools, the resources, /images, thumbnails and the gallery."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import http_client, live_server, make_settings

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"


def test_team_is_the_default() -> None:
    assert Settings(_env_file=None).history_visibility == "team"  # type: ignore[call-arg]


async def what_bob_sees(settings: Settings) -> dict[str, Any]:
    """Alice makes generation 1 and bob generation 2; then everything bob can learn about both."""
    seen: dict[str, Any] = {}
    async with live_server(settings) as live, AsyncExitStack() as stack:
        alice = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {ALICE}"}))
        bob = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {BOB}"}))
        made = [await alice.call_tool("pix_generate", {"prompt": "alice's secret garden"}),
                await bob.call_tool("pix_generate", {"prompt": "bob's boat"})]
        assert [m.structured_content["id"] for m in made] == [1, 2]
        listed = await bob.call_tool("list_generations", {})
        seen["listed"] = [g["prompt"] for g in listed.structured_content["generations"]]
        filtered = await bob.call_tool("list_generations", {"caller": "alice"})
        seen["listed alice"] = [g["prompt"] for g in filtered.structured_content["generations"]]
        searched = await bob.call_tool("list_generations", {"query": "garden"})
        seen["searched"] = [g["prompt"] for g in searched.structured_content["generations"]]
        for gen_id in (1, 2):
            got = await bob.call_tool("get_generation", {"id": gen_id})
            seen[f"get {gen_id}"] = got.content[0].text if got.is_error else got.structured_content["prompt"]
            for uri in (f"pixazo://generations/{gen_id}", f"pixazo://generations/{gen_id}/image"):
                try:
                    read = await bob.read_resource(uri)
                    seen[uri] = "read" if read.contents else "empty"
                except MCPError as exc:
                    seen[uri] = exc.error.message
        # alice always sees her own
        own = await alice.call_tool("get_generation", {"id": 1})
        seen["alice gets 1"] = own.structured_content["prompt"]
        async with httpx2.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {BOB}"}) as http:
            for path in ("/images/1", "/images/1/thumb", "/gallery/1", "/images/2", "/images/2/thumb", "/gallery/2"):
                seen[path] = (await http.get(path)).status_code
            gallery = (await http.get("/gallery")).text
            seen["gallery shows alice's"] = "alice&#39;s secret garden" in gallery
            seen["gallery shows bob's"] = "bob&#39;s boat" in gallery
            seen["gallery offers alice as a filter"] = '<option value="alice"' in gallery
            filtered_page = (await http.get("/gallery", params={"caller": "alice"})).text
            seen["gallery filtered to alice shows hers"] = "secret garden" in filtered_page
        # a browser session, not only a bearer token
        async with httpx2.AsyncClient(base_url=live.url) as browser:
            await browser.post("/login", data={"token": BOB, "next": "/gallery"})
            page = (await browser.get("/gallery")).text
            seen["session gallery shows alice's"] = "secret garden" in page
            seen["session /images/1"] = (await browser.get("/images/1")).status_code
    return seen


@pytest.mark.parametrize("visibility", ["team", "own"])
async def test_what_another_caller_can_see(tmp_path: Path, sim: Simulator, visibility: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", history_visibility=visibility,
                             auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"))
    seen = await what_bob_sees(settings)
    team = visibility == "team"
    # bob's own generation: always
    assert seen["get 2"] == "bob's boat"
    assert seen["pixazo://generations/2"] == "read"
    assert seen["pixazo://generations/2/image"] == "read"
    assert (seen["/images/2"], seen["/images/2/thumb"], seen["/gallery/2"]) == (200, 200, 200)
    assert seen["gallery shows bob's"] is True
    assert seen["alice gets 1"] == "alice's secret garden"
    # alice's generation: only under `team`
    if team:
        assert seen["listed"] == ["bob's boat", "alice's secret garden"]
        assert seen["listed alice"] == seen["searched"] == ["alice's secret garden"]
        assert seen["get 1"] == "alice's secret garden"
        assert seen["pixazo://generations/1"] == seen["pixazo://generations/1/image"] == "read"
        assert (seen["/images/1"], seen["/images/1/thumb"], seen["/gallery/1"]) == (200, 200, 200)
    else:
        assert seen["listed"] == ["bob's boat"]
        assert seen["listed alice"] == seen["searched"] == []
        assert "No generation with id 1." in seen["get 1"]  # as if it did not exist
        assert "No generation with id 1." in seen["pixazo://generations/1"]
        assert "No generation with id 1." in seen["pixazo://generations/1/image"]
        assert (seen["/images/1"], seen["/images/1/thumb"], seen["/gallery/1"]) == (404, 404, 404)
    assert seen["gallery shows alice's"] is team
    assert seen["gallery offers alice as a filter"] is team
    assert seen["gallery filtered to alice shows hers"] is team
    assert seen["session gallery shows alice's"] is team
    assert seen["session /images/1"] == (200 if team else 404)
    if not team:  # nothing bob learnt holds alice's prompt
        assert "secret garden" not in json.dumps({k: v for k, v in seen.items() if k != "alice gets 1"})
