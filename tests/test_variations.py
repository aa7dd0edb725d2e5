"""Variations (issue 26): `n` images in one call, each its own row and seed, sharing a batch id; admitted
whole or not at all; answered with every image and one contact sheet; grouped in the history and the
gallery."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx2
from mcp.types import CallToolResult, ImageContent, ResourceLink
from PIL import Image
from pydantic import SecretStr

from app.pixazo.simulator import Fault, Simulator
from app.storage.database import open_store
from tests.conftest import in_memory_client, live_server, make_settings, rows
from tests.test_everyday import THUMB_BUDGET

MINUTE, DAY = "2000-01-01T00:00:00.000Z", "2000-01-01"


def text_of(result: CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


def sheet_of(result: CallToolResult) -> Image.Image:
    (sheet,) = [c for c in result.content if isinstance(c, ImageContent)]
    data = base64.b64decode(sheet.data)
    assert len(data) <= THUMB_BUDGET
    return Image.open(io.BytesIO(data))


def prices_file(tmp_path: Path, prices: dict[str, Any]) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    return path


async def test_a_batch_of_four_is_four_rows_with_consecutive_seeds_one_batch_id_and_a_contact_sheet(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a lighthouse", "n": 4, "seed": 7})
    assert not result.is_error, text_of(result)
    found = rows(settings.db_path)
    assert [(r["id"], r["status"], json.loads(r["parameters_json"])["seed"]) for r in found] == [
        (1, "SUCCESS", 7), (2, "SUCCESS", 8), (3, "SUCCESS", 9), (4, "SUCCESS", 10)]
    (batch_id,) = {r["batch_id"] for r in found}
    assert batch_id is not None
    assert sim.stats.requests == 4
    assert [body["seed"] for body in sim.stats.bodies] != []  # each request carried its own seed
    assert sorted(body["seed"] for body in sim.stats.bodies) == [7, 8, 9, 10]
    links = [c for c in result.content if isinstance(c, ResourceLink)]
    assert [link.uri for link in links] == [f"pixazo://generations/{i}/image" for i in (1, 2, 3, 4)]
    sheet = sheet_of(result)
    assert sheet.size == (512, 512)  # the four thumbnails in a 2 x 2 grid
    structured = result.structured_content
    assert structured is not None
    assert (structured["id"], structured["status"], structured["batch_id"]) == (1, "SUCCESS", batch_id)
    assert structured["resource_uri"] == "pixazo://generations/1/image"
    assert [(i["id"], i["status"], i["parameters"]["seed"], i["batch_id"]) for i in structured["images"]] == [
        (1, "SUCCESS", 7, batch_id), (2, "SUCCESS", 8, batch_id), (3, "SUCCESS", 9, batch_id),
        (4, "SUCCESS", 10, batch_id)]
    text = text_of(result)
    assert text.startswith(f"Generated images 1, 2, 3, 4 (batch {batch_id}, seeds 7, 8, 9, 10): 4 made.")
    assert "#3 (seed 9): pixazo://generations/3/image" in text


async def test_without_a_seed_a_batch_takes_random_seeds_and_one_image_keeps_the_default(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        single = await client.call_tool("pix_generate", {"prompt": "one"})
        batch = await client.call_tool("pix_generate", {"prompt": "three", "n": 3})
    assert single.structured_content is not None
    assert batch.structured_content is not None
    assert single.structured_content["parameters"]["seed"] == 42  # the contract: seed 42 when not given
    assert single.structured_content["batch_id"] is None
    found = rows(settings.db_path)
    assert found[0]["batch_id"] is None
    seeds = [json.loads(r["parameters_json"])["seed"] for r in found[1:]]
    assert len(set(seeds)) == 3  # recorded, each its own
    assert all(0 <= s <= 4_294_967_295 for s in seeds)
    assert sorted(body["seed"] for body in list(sim.stats.bodies)[1:]) == sorted(seeds)
    assert f"random seeds {', '.join(str(s) for s in seeds)}" in text_of(batch)
    assert not [c for c in batch.content if isinstance(c, ImageContent)]  # PIXAZO_INLINE_IMAGE=none


async def test_a_partly_failed_batch_answers_with_what_succeeded_and_what_failed(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    sim.push(Fault(kind="http", status=400, body=json.dumps({"error": "bad prompt"})))  # the first to arrive
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 4, "seed": 1})
    assert not result.is_error  # three images were made and paid for: not an error
    found = rows(settings.db_path)
    assert sorted(r["status"] for r in found) == ["HTTP_400", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert all(r["finished_at"] is not None for r in found)  # every row ended
    (failed,) = [r for r in found if r["status"] == "HTTP_400"]
    structured = result.structured_content
    assert structured is not None
    assert structured["status"] == "PARTIAL"
    assert [i["status"] for i in structured["images"]] == [r["status"] for r in found]
    (failed_image,) = [i for i in structured["images"] if i["status"] == "HTTP_400"]
    assert failed_image["error"] == failed["error"]
    text = text_of(result)
    assert ": 3 made, 1 failed." in text.splitlines()[0]
    assert f"#{failed['id']} (seed {json.loads(failed['parameters_json'])['seed']}): failed (HTTP_400). " in text
    assert len([c for c in result.content if isinstance(c, ResourceLink)]) == 3
    assert sheet_of(result).size == (512, 512)  # a blank cell where the failed image would be


async def test_a_batch_that_wholly_fails_is_an_error(tmp_path: Path, sim: Simulator) -> None:
    sim.push(*[Fault(kind="http", status=400) for _ in range(2)])
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 2})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "FAILED"
    assert ": 0 made, 2 failed." in text_of(result)


async def test_a_batch_is_refused_whole_when_the_rate_limit_allows_only_part_of_it(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, rate_limit_per_minute=5, inline_image="none")
    async with in_memory_client(settings) as client:
        for prompt in ("one", "two", "three"):
            assert not (await client.call_tool("pix_generate", {"prompt": prompt})).is_error
        refused = await client.call_tool("pix_generate", {"prompt": "four more", "n": 4})
        two = await client.call_tool("pix_generate", {"prompt": "two more", "n": 2})
    assert refused.is_error
    text = text_of(refused)
    assert text.startswith("Generations 4, 5, 6, 7 (batch b")
    assert ("were refused (RATE_LIMITED): This call asks for 4 images and the per-minute limit allows 2 now; a "
            "batch is admitted whole or not at all, so none was sent to Pixazo or charged. Rate limit reached: 5 "
            "generations per minute") in text
    assert sim.stats.requests == 3 + 2  # nothing of the refused batch reached Pixazo
    assert not two.is_error
    found = rows(settings.db_path)
    assert [r["status"] for r in found[3:7]] == ["RATE_LIMITED"] * 4  # each image of it recorded, refused
    assert len({r["batch_id"] for r in found[3:7]}) == 1
    assert all(r["cost_usd"] == 0 for r in found[3:7])
    assert [r["status"] for r in found[7:]] == ["SUCCESS", "SUCCESS"]


async def test_a_batch_is_refused_whole_when_the_budget_pays_for_only_part_of_it(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", daily_budget_usd=0.15,
                             prices_file=prices_file(tmp_path, {"sdxl": 0.07}))
    async with in_memory_client(settings) as client:
        refused = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 4})
        status = (await client.call_tool("pix_status", {})).structured_content
        two = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 2})
    assert refused.is_error
    text = text_of(refused)
    assert "(BUDGET_EXCEEDED): This call asks for 4 images and the daily budget allows 2 now" in text
    assert "this call costs $0.07 (sdxl) per image, $0.28 for 4. Nothing was sent to Pixazo." in text
    assert status is not None
    assert status["spent_today_usd"] == 0  # nothing charged
    assert not two.is_error, text_of(two)
    assert sim.stats.requests == 2
    assert [(r["status"], r["cost_usd"]) for r in rows(settings.db_path)] == [
        *[("BUDGET_EXCEEDED", 0)] * 4, ("SUCCESS", 0.07), ("SUCCESS", 0.07)]


async def test_a_batch_larger_than_the_unfinished_allowance_is_refused_whole(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", max_background_per_caller=3)
    async with in_memory_client(settings) as client:
        refused = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 4})
    assert refused.is_error
    assert ("This call asks for 4 images and the limit on unfinished generations allows 3 now; "
            in text_of(refused))
    assert "This caller would have more than 3 generations unfinished" in text_of(refused)
    assert sim.stats.requests == 0


async def test_wait_false_answers_every_id_pending_and_pix_wait_collects_each(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 3, "wait": False})
        assert not result.is_error
        structured = result.structured_content
        assert structured is not None
        assert structured["status"] == "PENDING"
        assert [i["status"] for i in structured["images"]] == ["PENDING"] * 3
        text = text_of(result)
        assert ": 0 made, 3 still running." in text.splitlines()[0]
        assert "#2 (seed " in text
        assert "collect it with pix_wait and id 2." in text
        collected = [await client.call_tool("pix_wait", {"id": i}) for i in (1, 2, 3)]
    for gen_id, answer in enumerate(collected, start=1):
        assert answer.structured_content is not None
        assert answer.structured_content["status"] == "SUCCESS", text_of(answer)
        assert answer.structured_content["id"] == gen_id
        assert answer.structured_content["batch_id"] == structured["batch_id"]


async def test_a_batch_that_outlasts_the_answer_bound_answers_its_pending_ids(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, answer_within_s=1, inline_image="none")
    sim.push(Fault(kind="slow", delay=3))  # one image takes longer than the answer bound
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 2})
        structured = result.structured_content
        assert structured is not None
        assert structured["status"] == "PENDING"
        (slow,) = [i["id"] for i in structured["images"] if i["status"] == "PENDING"]
        assert ": 1 made, 1 still running." in text_of(result)
        for _ in range(10):  # each pix_wait waits at most the answer bound (1 s here)
            later = await client.call_tool("pix_wait", {"id": slow})
            assert later.structured_content is not None
            if later.structured_content["status"] != "PENDING":
                break
    assert later.structured_content["status"] == "SUCCESS"


async def test_pix_regenerate_makes_variations_of_a_generation(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with in_memory_client(settings) as client:
        await client.call_tool("pix_generate", {"prompt": "a fox", "num_steps": 12})
        again = await client.call_tool("pix_regenerate", {"id": 1, "n": 3, "seed": 100})
    assert not again.is_error, text_of(again)
    assert text_of(again).startswith("Regenerated images 2, 3, 4 (batch b")
    found = rows(settings.db_path)
    assert [(r["parent_id"], json.loads(r["parameters_json"])["seed"], json.loads(r["parameters_json"])["num_steps"])
            for r in found[1:]] == [(1, 100, 12), (1, 101, 12), (1, 102, 12)]
    assert len({r["batch_id"] for r in found[1:]}) == 1
    assert sheet_of(again).size == (512, 512)  # three thumbnails and a blank cell


async def test_an_upscale_has_no_seed_so_it_takes_no_variations(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", poll_base_s=0.05, poll_cap_s=0.1)
    async with in_memory_client(settings) as client:
        await client.call_tool("pix_generate", {"prompt": "a fox"})
        upscaled = await client.call_tool("pix_upscale", {"image": 1})
        assert not upscaled.is_error, text_of(upscaled)
        refused = await client.call_tool("pix_regenerate", {"id": 2, "n": 2})
    assert refused.is_error
    assert text_of(refused) == ("Cannot repeat generation 2: crystal-upscaler takes no seed, so `n` must be 1 for "
                                "it. Nothing was recorded or sent to Pixazo.")
    assert len(rows(settings.db_path)) == 2


async def test_list_generations_and_the_gallery_group_a_batch(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with live_server(settings) as live:
        async with in_memory_client(settings) as client:
            await client.call_tool("pix_generate", {"prompt": "alone"})
            batch = await client.call_tool("pix_generate", {"prompt": "a fox in snow", "n": 3})
            await client.call_tool("pix_generate", {"prompt": "after"})
            listed = await client.call_tool("list_generations", {})
        async with httpx2.AsyncClient(base_url=live.url) as http:
            page = (await http.get("/gallery")).text
            detail = (await http.get("/gallery/3")).text
    assert batch.structured_content is not None
    batch_id = batch.structured_content["batch_id"]
    lines = text_of(listed).splitlines()
    assert len(lines) == 3  # the batch is one line
    assert lines[0].startswith("#5 SUCCESS generate (sdxl, ")
    assert lines[1].startswith(f"batch {batch_id}: #4 SUCCESS, #3 SUCCESS, #2 SUCCESS; generate (sdxl, ")
    assert lines[1].endswith(": a fox in snow")
    assert lines[2].startswith("#1 SUCCESS ")
    records = listed.structured_content["generations"]  # type: ignore[index]
    assert [r["batch_id"] for r in records] == [None, batch_id, batch_id, batch_id, None]
    assert page.count('class="card batch"') == 1
    card = page.split(f'data-batch="{batch_id}"', 1)[1].split("</li>", 1)[0]
    assert [f'href="/gallery/{i}"' in card for i in (2, 3, 4)] == [True] * 3
    assert "Batch of 3" in card
    assert 'data-id="1"' in page
    assert 'data-id="5"' in page
    assert f'<dd id="batch">{batch_id} ' in detail


async def test_both_engines_admit_a_batch_whole_or_not_at_all(database_url: str) -> None:
    store = await open_store(database_url)
    try:
        limits = {"per_minute": 5, "daily": None, "minute_since": MINUTE, "day_since": DAY}
        first = await store.insert_admitted("p", [{"seed": s} for s in (1, 2, 3)], "alice", **limits)
        refused = await store.insert_admitted("p", [{"seed": s} for s in (4, 5, 6)], "alice", **limits)
        fits = await store.insert_admitted("p", [{"seed": s} for s in (7, 8)], "alice", **limits)
        full = await store.insert_admitted("p", {"seed": 9}, "alice", **limits)
    finally:
        await store.close()
    assert first.refused_by is None
    assert [(g.status, g.parameters["seed"]) for g in first.generations] == [("PENDING", 1), ("PENDING", 2),
                                                                             ("PENDING", 3)]
    assert refused.refused_by == "per-minute"
    assert [(g.status, g.parameters["seed"]) for g in refused.generations] == [
        ("RATE_LIMITED", 4), ("RATE_LIMITED", 5), ("RATE_LIMITED", 6)]
    assert fits.refused_by is None
    assert [g.parameters["seed"] for g in fits.generations] == [7, 8]
    assert full.refused_by == "per-minute"
    ids = [g.id for a in (first, refused, fits) for g in a.generations]
    assert ids == sorted(ids)


async def test_pix_cancel_stops_one_image_of_a_batch_and_leaves_the_others(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, answer_within_s=1, inline_image="none")
    sim.push(Fault(kind="slow", delay=20))  # one image would take 20 s
    async with in_memory_client(settings) as client:
        started = await client.call_tool("pix_generate", {"prompt": "a fox", "n": 2, "wait": False})
        assert started.structured_content is not None
        answers = {i["id"]: await client.call_tool("pix_wait", {"id": i["id"]})
                   for i in started.structured_content["images"]}
        (slow,) = [i for i, a in answers.items()
                   if a.structured_content and a.structured_content["status"] == "PENDING"]
        cancelled = await client.call_tool("pix_cancel", {"id": slow})
    assert not cancelled.is_error
    assert {r["id"]: r["status"] for r in rows(settings.db_path)} == {
        i: ("CANCELLED" if i == slow else "SUCCESS") for i in answers}
