"""Lineage (issue 15): get_generation's parent and children, pix_regenerate, on both engines, through the
MCP client; visibility under PIXAZO_HISTORY_VISIBILITY=own."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from pydantic import SecretStr
from yarl import URL

from app.core.lineage import CHILDREN_SHOWN
from app.pixazo.gateway import CATALOGUE
from app.pixazo.simulator import Simulator
from app.settings import Settings
from app.storage.database import RecordStore
from app.storage.rows import CallMeta
from tests.conftest import (
    SESSION_SECRET,
    LiveServer,
    http_client,
    in_memory_client,
    live_server,
    make_settings,
    store_for,
)
from tests.test_generate import BASE, Upstream

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
SDXL_URL = BASE + CATALOGUE["sdxl"].path
FLUX_URL = BASE + CATALOGUE["flux-schnell"].path
NOTHING_DONE = "Nothing was recorded or sent to Pixazo."


async def seed(store: RecordStore, prompt: str, caller: str | None, parent_id: int | None, *,
               model: str = "sdxl", operation: str = "generate", parameters: dict[str, Any] | None = None) -> int:
    """A finished row written straight to the store (another caller's edit, an old model)."""
    gen = await store.insert_pending(prompt, parameters or {}, caller,
                                     meta=CallMeta(model=model, operation=operation, parent_id=parent_id))
    await store.finish(gen.id, "HTTP_500", error="Pixazo failed")
    return gen.id


@asynccontextmanager
async def two_callers(tmp_path: Path, sim: Simulator, database_url: str,
                      visibility: str) -> AsyncIterator[tuple[LiveServer, Client, Client]]:
    """A live server with two callers (alice and bob) on the given database, and each one's MCP client."""
    settings = make_settings(tmp_path, sim.url, inline_image="none", history_visibility=visibility,
                             database_url=SecretStr(database_url), session_secret=SecretStr(SESSION_SECRET),
                             auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"))
    async with live_server(settings) as live, AsyncExitStack() as stack:
        alice = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {ALICE}"}))
        bob = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {BOB}"}))
        yield live, alice, bob


def summary(structured: dict[str, Any] | None) -> tuple[int, str, str, str, str | None] | None:
    if structured is None:
        return None
    return (structured["id"], structured["operation"], structured["model"], structured["status"],
            structured["resource_uri"])


# --- get_generation and the resource: parent and children, as the viewer may see them -------------

@pytest.mark.parametrize("visibility", ["team", "own"])
async def test_parent_and_children_only_as_far_as_the_viewer_may_see(
        tmp_path: Path, sim: Simulator, database_url: str, visibility: str) -> None:
    own = visibility == "own"
    store = await store_for(database_url)
    async with two_callers(tmp_path, sim, database_url, visibility) as (_live, alice, bob):
        assert (await alice.call_tool("pix_generate", {"prompt": "a lighthouse", "seed": 3})).structured_content[
            "id"] == 1
        again = await alice.call_tool("pix_regenerate", {"id": 1, "seed": 4})
        assert again.structured_content["id"] == 2
        assert again.structured_content["parent_id"] == 1
        bobs_edit = await seed(store, "bob's edit of it", "bob", 1, model="crystal-upscaler", operation="upscale")
        assert (await bob.call_tool("pix_generate", {"prompt": "bob's boat"})).structured_content["id"] == 4
        alices_edit_of_bobs = await seed(store, "alice's edit of bob's", "alice", 4, model="bria-rmbg-2.0",
                                         operation="remove_background")

        first = (await alice.call_tool("get_generation", {"id": 1})).structured_content
        second = (await alice.call_tool("get_generation", {"id": 2})).structured_content
        fifth = (await alice.call_tool("get_generation", {"id": alices_edit_of_bobs})).structured_content
        resource = (await alice.read_resource("pixazo://generations/1")).contents[0]
        bob_regenerates = await bob.call_tool("pix_regenerate", {"id": 1})
        sent_before = sim.stats.requests
    await store.close()

    assert first["parent"] is None
    mine = (2, "generate", "sdxl", "SUCCESS", "pixazo://generations/2/image")
    bobs = (bobs_edit, "upscale", "crystal-upscaler", "HTTP_500", None)
    if own:  # bob's edit of alice's image is not hers to see, as a child either
        assert [summary(c) for c in first["children"]] == [mine]
    else:
        assert [summary(c) for c in first["children"]] == [bobs, mine]  # newest first
    assert first["more_children"] is False
    assert summary(second["parent"]) == (1, "generate", "sdxl", "SUCCESS", "pixazo://generations/1/image")
    assert second["children"] == []
    assert (second["model"], second["operation"], second["parent_id"]) == ("sdxl", "generate", 1)
    # the row records its parent; the summary is there only when the viewer may see that parent
    assert fifth["parent_id"] == 4
    assert summary(fifth["parent"]) == (None if own else (4, "generate", "sdxl", "SUCCESS",
                                                          "pixazo://generations/4/image"))
    # the resource shows the same lineage
    shown = json.loads(resource.text)
    assert [c["id"] for c in shown["children"]] == [c["id"] for c in first["children"]]
    assert shown["parent"] is None
    # another caller's generation cannot be repeated under `own`: as missing as no generation
    if own:
        assert bob_regenerates.is_error
        assert f"No generation with id 1. {NOTHING_DONE}" in bob_regenerates.content[0].text
    else:
        assert not bob_regenerates.is_error
        assert bob_regenerates.structured_content["parent_id"] == 1
    assert sent_before == 3 + (0 if own else 1)


async def test_children_are_bounded_newest_first(tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", database_url=SecretStr(database_url))
    store = await store_for(database_url)
    try:
        parent = await seed(store, "a lighthouse", None, None)
        kids = [await seed(store, f"variation {n}", None, parent) for n in range(CHILDREN_SHOWN + 1)]
        async with in_memory_client(settings) as client:
            shown = (await client.call_tool("get_generation", {"id": parent})).structured_content
            last = (await client.call_tool("get_generation", {"id": kids[-1]})).structured_content
    finally:
        await store.close()
    assert [c["id"] for c in shown["children"]] == list(reversed(kids))[:CHILDREN_SHOWN]
    assert shown["more_children"] is True
    assert last["parent"]["id"] == parent
    assert last["more_children"] is False


async def test_the_output_schema_declares_the_lineage(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    detail = tools["get_generation"].output_schema
    assert detail is not None
    # The published schema is lean (issue 23): the lineage fields, the rest of the record carried beside them.
    assert {"parent", "children", "parent_id"} <= set(detail["properties"])
    assert detail.get("additionalProperties", True) is not False
    regenerate = tools["pix_regenerate"]
    assert regenerate.input_schema["required"] == ["id"]
    assert regenerate.input_schema["additionalProperties"] is False
    assert set(regenerate.input_schema["properties"]) == {
        "id", "prompt", "negative_prompt", "width", "height", "num_steps", "guidance_scale", "seed", "model", "wait",
        "n"}
    assert regenerate.output_schema is not None
    assert {"id", "status", "resource_uri"} <= set(regenerate.output_schema["properties"])


# --- pix_regenerate: the exact request, the row, the refusals ----------------------------------

@pytest.fixture
def upstream(sim: Simulator) -> Any:
    """Pixazo's API faked by aioresponses; images from the simulator's image route (a real server)."""
    with Upstream(passthrough=[sim.url]) as mocked:
        yield mocked


def bodies(upstream: Any, url: str) -> list[dict[str, Any]]:
    return [r.kwargs["json"] for r in upstream.requests.get(("POST", URL(url)), [])]


def posts(upstream: Any) -> int:
    return sum(len(calls) for (method, _), calls in upstream.requests.items() if method == "POST")


async def test_regenerate_sends_the_recorded_call_with_the_override_and_records_its_parent(
        tmp_path: Path, sim: Simulator, upstream: Any, database_url: str) -> None:
    settings = make_settings(tmp_path, BASE, inline_image="none", database_url=SecretStr(database_url))
    upstream.post(SDXL_URL, payload={"imageUrl": sim.url + "/images/1-768x1024-0.png"}, repeat=True)
    async with in_memory_client(settings) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a lighthouse", "negative_prompt": "fog",
                                                       "width": 768, "seed": 3, "ticket": "T-1"})
        assert not made.is_error, made.content[0].text
        again = await client.call_tool("pix_regenerate", {"id": 1, "seed": 9, "guidance_scale": 7.5})
    assert not again.is_error, again.content[0].text
    first, second = bodies(upstream, SDXL_URL)
    assert first == {"prompt": "a lighthouse", "negative_prompt": "fog", "width": 768, "height": 1024,
                     "num_steps": 20, "guidance_scale": 5.0, "seed": 3}
    assert second == {**first, "seed": 9, "guidance_scale": 7.5}  # the extra argument is never sent
    store = await store_for(database_url)
    try:
        row = await store.get(2)
    finally:
        await store.close()
    assert row is not None
    assert (row.status, row.parent_id, row.model, row.operation, row.prompt) == (
        "SUCCESS", 1, "sdxl", "generate", "a lighthouse")
    assert row.parameters == {"ticket": "T-1", "negative_prompt": "fog", "width": 768, "height": 1024,
                              "num_steps": 20, "guidance_scale": 7.5, "seed": 9}
    sc = again.structured_content
    assert (sc["id"], sc["parent_id"], sc["model"], sc["operation"]) == (2, 1, "sdxl", "generate")


async def test_regenerating_a_flux_row_keeps_fluxs_defaults(tmp_path: Path, sim: Simulator,
                                                            upstream: Any) -> None:
    # The operator's SDXL defaults must not leak into a FLUX call (FLUX takes 1-8 steps, default 4).
    settings = make_settings(tmp_path, BASE, inline_image="none", default_num_steps=12, default_width=768)
    upstream.post(FLUX_URL, payload={"output": sim.url + "/images/1-1024x1024-0.png"}, repeat=True)
    async with in_memory_client(settings) as client:
        assert not (await client.call_tool("pix_generate", {"prompt": "a fox", "model": "flux-schnell",
                                                            "seed": 9})).is_error
        again = await client.call_tool("pix_regenerate", {"id": 1, "prompt": "a wolf"})
        row = (await client.call_tool("get_generation", {"id": 2})).structured_content
    assert not again.is_error, again.content[0].text
    assert bodies(upstream, FLUX_URL) == [
        {"prompt": "a fox", "width": 1024, "height": 1024, "num_steps": 4, "seed": 9},
        {"prompt": "a wolf", "width": 1024, "height": 1024, "num_steps": 4, "seed": 9}]
    assert (row["model"], row["operation"], row["parent_id"], row["prompt"]) == ("flux-schnell", "generate", 1,
                                                                                  "a wolf")
    assert row["parameters"] == {"width": 1024, "height": 1024, "num_steps": 4, "seed": 9}


@pytest.mark.parametrize(
    ("made", "overrides", "named"),
    [
        ({"model": "flux-schnell"}, {"num_steps": 9}, "`num_steps` must be an integer from 1 to 8 for flux-schnell"),
        ({"model": "flux-schnell"}, {"negative_prompt": "blur"}, "flux-schnell takes no `negative_prompt`"),
        ({"model": "flux-schnell"}, {"width": 1536},
         "`width` must be an integer from 512 to 1024, a multiple of 8 for flux-schnell"),
        ({}, {"width": 2000}, "`width` must be an integer from 512 to 1536, a multiple of 8 for sdxl"),
        ({}, {"guidance_scale": 0.5}, "`guidance_scale` must be a number from 1 to 15 for sdxl"),
        ({}, {"prompt": ""}, "`prompt` must be a string of 1 to 2000 characters for sdxl"),
        ({}, {"model": "flux-schnell", "num_steps": 12},
         "`num_steps` must be an integer from 1 to 8 for flux-schnell"),
    ],
)
async def test_overrides_outside_the_models_range_are_refused_naming_it(
        tmp_path: Path, sim: Simulator, upstream: Any, made: dict[str, Any], overrides: dict[str, Any],
        named: str) -> None:
    settings = make_settings(tmp_path, BASE, inline_image="none")
    upstream.post(SDXL_URL, payload={"imageUrl": sim.url + "/images/1-1024x1024-0.png"}, repeat=True)
    upstream.post(FLUX_URL, payload={"output": sim.url + "/images/1-1024x1024-0.png"}, repeat=True)
    async with in_memory_client(settings) as client:
        assert not (await client.call_tool("pix_generate", {"prompt": "a fox", **made})).is_error
        refused = await client.call_tool("pix_regenerate", {"id": 1, **overrides})
        listed = (await client.call_tool("list_generations", {})).structured_content["generations"]
    assert refused.is_error
    assert named in refused.content[0].text
    assert NOTHING_DONE in refused.content[0].text
    assert posts(upstream) == 1  # nothing sent
    assert [g["id"] for g in listed] == [1]  # nothing recorded


async def test_a_missing_id_or_an_unknown_argument_is_refused_with_nothing_sent(
        settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        missing = await client.call_tool("pix_regenerate", {"id": 1})
        assert not (await client.call_tool("pix_generate", {"prompt": "a fox"})).is_error
        sent = sim.stats.requests
        unknown = await client.call_tool("pix_regenerate", {"id": 1, "ticket": "T-1"})
        bad_model = await client.call_tool("pix_regenerate", {"id": 1, "model": "dall-e"})
        listed = (await client.call_tool("list_generations", {})).structured_content["generations"]
    assert missing.is_error
    assert f"No generation with id 1. {NOTHING_DONE}" in missing.content[0].text
    assert unknown.is_error
    assert "pix_regenerate takes no `ticket`" in unknown.content[0].text
    assert bad_model.is_error
    assert "`model` must be one of sdxl, sdxl-lightning, flux-schnell" in bad_model.content[0].text
    assert sim.stats.requests == sent
    assert [g["id"] for g in listed] == [1]


async def test_a_model_change_carries_the_picture_and_takes_the_new_models_tuning(
        tmp_path: Path, sim: Simulator, upstream: Any) -> None:
    settings = make_settings(tmp_path, BASE, inline_image="none")
    upstream.post(SDXL_URL, payload={"imageUrl": sim.url + "/images/1-1024x1024-0.png"})
    upstream.post(FLUX_URL, payload={"output": sim.url + "/images/2-1024x1024-0.png"})
    async with in_memory_client(settings) as client:
        assert not (await client.call_tool("pix_generate", {
            "prompt": "a fox", "negative_prompt": "blur", "width": 1536, "height": 768, "num_steps": 18,
            "guidance_scale": 7, "seed": 5})).is_error
        moved = await client.call_tool("pix_regenerate", {"id": 1, "model": "flux-schnell"})
        row = (await client.call_tool("get_generation", {"id": 2})).structured_content
    assert not moved.is_error, moved.content[0].text
    # width 1536 is outside FLUX's range: its default; steps and guidance are SDXL's own tuning
    assert bodies(upstream, FLUX_URL) == [{"prompt": "a fox", "width": 1024, "height": 768, "num_steps": 4,
                                           "seed": 5}]
    assert (row["model"], row["operation"], row["parent_id"]) == ("flux-schnell", "generate", 1)
    assert ("Not carried over to flux-schnell from generation 1: guidance_scale, negative_prompt, num_steps, "
            "width (its defaults applied).") in [c.text for c in moved.content if c.type == "text"]


async def test_rows_that_cannot_be_repeated_are_refused_clearly(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", database_url=SecretStr(database_url))
    store = await store_for(database_url)
    try:
        retired = await seed(store, "a fox", None, None, model="dall-e",
                             parameters={"width": 1024, "seed": 3})
        upscaled = await seed(store, "a fox", None, None, model="crystal-upscaler", operation="upscale",
                              parameters={"image": "https://example.com/fox.png", "scale": 2})
        async with in_memory_client(settings) as client:
            unknown_model = await client.call_tool("pix_regenerate", {"id": retired})
            other_model = await client.call_tool("pix_regenerate", {"id": upscaled, "model": "sdxl"})
            prompt_for_upscaler = await client.call_tool("pix_regenerate", {"id": upscaled, "prompt": "a wolf"})
            count = len((await client.call_tool("list_generations", {})).structured_content["generations"])
    finally:
        await store.close()
    assert unknown_model.is_error
    assert ("was made by `dall-e` (generate), which is not in this server's catalogue, so it cannot be "
            "repeated") in unknown_model.content[0].text
    assert other_model.is_error
    assert "`model` can be changed only when repeating a text-to-image generation" in other_model.content[0].text
    assert prompt_for_upscaler.is_error
    assert "crystal-upscaler takes no `prompt`" in prompt_for_upscaler.content[0].text
    for refused in (unknown_model, other_model, prompt_for_upscaler):
        assert NOTHING_DONE in refused.content[0].text
    assert count == 2
    assert sim.stats.requests == 0



# --- the gallery: a generation's chain, and the model and operation in the list -------------------

def ids_in(page: str, element_id: str) -> list[int]:
    """The generations listed in one of the detail page's chains, in page order."""
    match = re.search(rf'id="{element_id}">(.*?)</(?:ol|ul)>', page, re.S)
    return [int(found) for found in re.findall(r'data-id="(\d+)"', match[1])] if match else []


@pytest.mark.parametrize("visibility", ["team", "own"])
async def test_the_gallery_shows_the_chain_the_viewer_may_see(
        tmp_path: Path, sim: Simulator, database_url: str, visibility: str) -> None:
    own = visibility == "own"
    store = await store_for(database_url)
    async with two_callers(tmp_path, sim, database_url, visibility) as (live, alice, bob):
        await alice.call_tool("pix_generate", {"prompt": "a lighthouse"})  # 1
        await alice.call_tool("pix_regenerate", {"id": 1, "seed": 2})  # 2
        await alice.call_tool("pix_regenerate", {"id": 2, "seed": 3})  # 3
        bobs_child = await seed(store, "bob's upscale", "bob", 2, model="crystal-upscaler", operation="upscale")  # 4
        await bob.call_tool("pix_generate", {"prompt": "bob's boat"})  # 5
        alices_of_bobs = await seed(store, "alice's cut-out", "alice", 5, model="bria-rmbg-2.0",
                                    operation="remove_background")  # 6
        # a long chain of alice's: only the nearest ancestors are walked
        long_chain = [alices_of_bobs]
        for n in range(12):
            long_chain.append(await seed(store, f"step {n}", "alice", long_chain[-1]))
        async with AsyncExitStack() as pages:
            http = await pages.enter_async_context(
                httpx2.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {ALICE}"}))
            third, second = (await http.get("/gallery/3")).text, (await http.get("/gallery/2")).text
            sixth, last = (await http.get("/gallery/6")).text, (await http.get(f"/gallery/{long_chain[-1]}")).text
            index = (await http.get("/gallery")).text
            thumbs = [(await http.get(f"/images/{n}/thumb")).headers["content-type"] for n in (1, 2)]
    await store.close()

    # generation 3: its ancestors oldest first, each linked with its thumbnail, then itself
    assert ids_in(third, "ancestors") == [1, 2, 3]
    assert '<a class="thumb" href="/gallery/1"' in third
    assert '<img src="/images/1/thumb"' in third
    assert '<a class="thumb" href="/gallery/2"' in third
    assert '<img src="/images/2/thumb"' in third
    assert 'aria-current="page"' in third
    assert 'href="/gallery/3"' not in third
    assert ids_in(third, "children") == []
    assert thumbs == ["image/jpeg", "image/jpeg"]
    # generation 2: its parent, and its children newest first (bob's only where alice may see it)
    assert ids_in(second, "ancestors") == [1, 2]
    assert ids_in(second, "children") == ([3] if own else [bobs_child, 3])
    assert ('href="/gallery/4"' in second) is not own
    # generation 6 was made from bob's 5: shown only where alice may see it, and never walked through
    assert ids_in(sixth, "ancestors") == ([] if own else [5, 6])
    assert ("#5 (not visible to you)" in sixth) is own
    assert ('href="/gallery/5"' in sixth) is not own
    # a long chain: the nearest ten ancestors, and a note that there were earlier ones
    assert ids_in(last, "ancestors") == [*long_chain[-11:-1], long_chain[-1]]
    assert 'id="chain-cut"' in last
    assert 'id="chain-cut"' not in third
    # the list shows each generation's model and operation, and where it came from
    assert '<span class="op">generate</span> · <span class="model">sdxl</span> · from <a href="/gallery/2">#2</a>' \
        in index
    assert '<span class="op">remove background</span> · <span class="model">bria-rmbg-2.0</span>' in index
    assert ('<span class="model">crystal-upscaler</span>' in index) is not own


# --- pix_regenerate of an edit: the input image, as first given, is resolved again -----------------

def model_calls(sim: Simulator, path: str) -> list[dict[str, Any]]:
    return [c["body"] for c in sim.stats.calls if c["method"] == "POST" and c["path"] == path]


@pytest.fixture
def edit_settings(tmp_path: Path, sim: Simulator) -> Settings:
    return make_settings(tmp_path, sim.url, inline_image="none", poll_base_s=0.02, poll_cap_s=0.05)


async def test_regenerating_an_upscale_sends_the_same_input_again(edit_settings: Settings,
                                                                  sim: Simulator) -> None:
    async with in_memory_client(edit_settings) as client:
        source = (await client.call_tool("pix_generate", {"prompt": "a red fox"})).structured_content
        upscaled = await client.call_tool("pix_upscale", {"image": source["id"], "scale": 4, "ticket": "T-9"})
        assert not upscaled.is_error, upscaled.content[0].text
        again = await client.call_tool("pix_regenerate", {"id": upscaled.structured_content["id"]})
        assert not again.is_error, again.content[0].text
        row = (await client.call_tool("get_generation", {"id": again.structured_content["id"]})).structured_content
    upscaler = CATALOGUE["crystal-upscaler"].path
    assert model_calls(sim, upscaler) == [{"image": source["image_url"], "scale_factor": 4}] * 2
    assert (row["model"], row["operation"], row["parent_id"], row["status"]) == (
        "crystal-upscaler", "upscale", upscaled.structured_content["id"], "SUCCESS")
    assert row["parameters"] == {"image": source["id"], "scale": 4, "ticket": "T-9"}  # as first given
    assert row["prompt"] == "a red fox"
    assert again.content[0].text.startswith(f"Regenerated image {row['id']}:")


async def test_regenerating_an_inpaint_applies_the_override(edit_settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(edit_settings) as client:
        source = (await client.call_tool("pix_generate", {"prompt": "a garden"})).structured_content
        mask = f"pixazo://generations/{source['id']}/image"
        painted = await client.call_tool("pix_inpaint", {"image": source["id"], "mask": mask, "prompt": "a cat",
                                                         "seed": 3})
        assert not painted.is_error, painted.content[0].text
        again = await client.call_tool("pix_regenerate", {"id": painted.structured_content["id"],
                                                          "prompt": "a dog", "seed": 4})
        assert not again.is_error, again.content[0].text
    first, second = model_calls(sim, CATALOGUE["sd-inpainting"].path)
    assert first == {"prompt": "a cat", "imageUrl": source["image_url"], "maskUrl": source["image_url"],
                     "seed": 3}
    assert second == {**first, "prompt": "a dog", "seed": 4}
    out = again.structured_content
    assert (out["model"], out["operation"], out["parent_id"], out["prompt"]) == (
        "sd-inpainting", "inpaint", painted.structured_content["id"], "a dog")
    assert out["parameters"] == {"image": source["id"], "mask": mask, "seed": 4}


async def test_an_edit_whose_input_is_gone_is_refused_with_nothing_sent(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", database_url=SecretStr(database_url))
    store = await store_for(database_url)
    try:
        orphan = await seed(store, "a fox", None, None, model="crystal-upscaler", operation="upscale",
                            parameters={"image": 999, "scale": 2})
        async with in_memory_client(settings) as client:
            refused = await client.call_tool("pix_regenerate", {"id": orphan})
            count = len((await client.call_tool("list_generations", {})).structured_content["generations"])
    finally:
        await store.close()
    assert refused.is_error
    assert f"Cannot repeat generation {orphan}: `image`: no generation with id 999. {NOTHING_DONE}" in \
        refused.content[0].text
    assert count == 1
    assert list(sim.stats.calls) == []
