"""The editing tools against the simulator (issue 15): the request Pixazo gets, with the input URL it
really fetched; the row (model, operation, parent, cost); the result; refusals with nothing sent; and
the input forms (generation id, pixazo:// URI, https URL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ImageContent, ResourceLink

from app.pixazo.gateway import EDITORS
from app.pixazo.simulator import Fault, Simulator
from app.settings import Settings
from tests.conftest import http_client, in_memory_client, live_server, make_settings, rows

UPSCALE, RMBG, INPAINT, OUTPAINT = (EDITORS[o].path for o in ("upscale", "remove_background", "inpaint", "outpaint"))


@pytest.fixture
def settings(tmp_path: Path, sim: Simulator) -> Settings:
    return make_settings(tmp_path, sim.url, poll_base_s=0.02, poll_cap_s=0.05, max_retries=0)


async def call(settings: Settings, tool: str, arguments: dict[str, Any]) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool(tool, arguments)


async def parent(settings: Settings, prompt: str = "a red fox in snow") -> dict[str, Any]:
    """A generation to edit: a real 1024 x 1024 PNG from the simulator, stored by the server."""
    result = await call(settings, "pix_generate", {"prompt": prompt})
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content)


def model_calls(sim: Simulator, path: str) -> list[dict[str, Any]]:
    return [c["body"] for c in sim.stats.calls if c["method"] == "POST" and c["path"] == path]


def edited(settings: Settings) -> dict[str, Any]:
    """The last row (the edit), its parameters decoded."""
    row = rows(settings.db_path)[-1]
    return {**row, "parameters": json.loads(row["parameters_json"])}


def check_result(result: Any, row: dict[str, Any], sim: Simulator) -> None:
    """pix_generate's shape: a text line, a resource link to the stored copy, an inline thumbnail."""
    assert not result.is_error, result.content[0].text
    out = result.structured_content
    assert out["id"] == row["id"]
    assert out["status"] == "SUCCESS"
    assert out["resource_uri"] == f"pixazo://generations/{row['id']}/image"
    assert out["image_bytes"] == row["image_bytes"] > len(sim.image_bytes(out["image_url"]))  # with its XMP
    links = [c for c in result.content if isinstance(c, ResourceLink)]
    assert [str(link.uri) for link in links] == [out["resource_uri"]]
    thumbs = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(thumbs) == 1
    assert thumbs[0].mime_type == "image/jpeg"


async def test_upscale_sends_the_parents_pixazo_url_and_keeps_an_image_over_the_generate_cap(
        settings: Settings, sim: Simulator) -> None:
    source = await parent(settings)
    result = await call(settings, "pix_upscale", {"image": source["id"], "scale": 2})
    # The request: the upscaler's path, its wire names, the parent's own Pixazo URL (fresh)...
    assert model_calls(sim, UPSCALE) == [{"image": source["image_url"], "scale_factor": 2}]
    # ... which the simulator really fetched, as Pixazo would.
    assert [(f["url"], f["ok"], f["width"]) for f in sim.stats.fetches] == [(source["image_url"], True, 1024)]
    row = edited(settings)
    assert (row["model"], row["operation"], row["parent_id"], row["cost_usd"]) == (
        "crystal-upscaler", "upscale", source["id"], 0.07)
    assert row["status"] == "SUCCESS", row["error"]
    # The parent's prompt, so a search for its words finds the chain; the input recorded as given.
    assert row["prompt"] == "a red fox in snow"
    assert row["parameters"] == {"image": source["id"], "scale": 2}
    check_result(result, row, sim)
    # 2048 x 2048: more than PIXAZO_MAX_IMAGE_PIXELS (1536²) allows a generated image, kept all the same.
    assert "2048x2048" in result.structured_content["image_url"]
    assert result.content[0].text.startswith(f"Upscaled image {row['id']}:")


async def test_upscale_price_follows_the_scale_tier(settings: Settings, sim: Simulator) -> None:
    source = await parent(settings)
    result = await call(settings, "pix_upscale", {"image": source["id"], "scale": 8})
    assert not result.is_error, result.content[0].text
    assert model_calls(sim, UPSCALE)[0]["scale_factor"] == 8
    assert edited(settings)["cost_usd"] == 0.45


async def test_remove_background_sends_image_url_and_keeps_a_transparent_png(settings: Settings,
                                                                             sim: Simulator) -> None:
    source = await parent(settings)
    uri = f"pixazo://generations/{source['id']}/image"
    result = await call(settings, "pix_remove_background", {"image": uri})
    assert model_calls(sim, RMBG) == [{"image_url": source["image_url"]}]
    assert sim.stats.fetches[-1]["ok"] is True
    row = edited(settings)
    assert (row["model"], row["operation"], row["parent_id"], row["cost_usd"]) == (
        "bria-rmbg-2.0", "remove_background", source["id"], 0.018)
    assert row["parameters"] == {"image": uri}  # the URI as given
    check_result(result, row, sim)
    assert row["image_mime"] == "image/png"


async def test_inpaint_sends_image_and_mask_urls_and_records_its_own_prompt(settings: Settings,
                                                                           sim: Simulator) -> None:
    source = await parent(settings)
    mask = await parent(settings, "a white disc on black")
    result = await call(settings, "pix_inpaint", {"image": str(source["id"]), "mask": mask["id"],
                                                  "prompt": "a fox wearing a hat", "negative_prompt": "blur",
                                                  "seed": 7, "guidance_scale": 4})
    assert model_calls(sim, INPAINT) == [{"prompt": "a fox wearing a hat", "imageUrl": source["image_url"],
                                         "maskUrl": mask["image_url"], "negative_prompt": "blur",
                                         "guidance": 4.0, "seed": 7}]
    assert {f["url"] for f in sim.stats.fetches if f["ok"]} == {source["image_url"], mask["image_url"]}
    row = edited(settings)
    # The parent is the image's generation (not the mask's); the row's prompt is the tool's.
    assert (row["model"], row["operation"], row["parent_id"], row["cost_usd"]) == (
        "sd-inpainting", "inpaint", source["id"], 0.0)
    assert row["prompt"] == "a fox wearing a hat"
    assert row["parameters"] == {"image": str(source["id"]), "mask": mask["id"], "negative_prompt": "blur",
                                 "guidance_scale": 4.0, "seed": 7}
    check_result(result, row, sim)


async def test_outpaint_sends_zoom_and_its_fixed_fields(settings: Settings, sim: Simulator) -> None:
    source = await parent(settings)
    result = await call(settings, "pix_outpaint", {"image": source["id"], "zoom_out_percentage": 25,
                                                   "ticket": "ART-7"})
    assert model_calls(sim, OUTPAINT) == [{"image_url": source["image_url"], "zoom_out_percentage": 25,
                                          "num_images": 1, "output_format": "png"}]
    row = edited(settings)
    # No published price: the cost is unknown (NULL), not zero.
    assert (row["model"], row["operation"], row["parent_id"], row["cost_usd"]) == (
        "image-outpaint", "outpaint", source["id"], None)
    # An extra argument is kept with the record, never sent (pix_generate's rule).
    assert row["parameters"] == {"image": source["id"], "zoom_out_percentage": 25, "ticket": "ART-7"}
    check_result(result, row, sim)
    assert "1280x1280" in result.structured_content["image_url"]


async def test_an_https_url_is_passed_as_given_with_no_parent(settings: Settings, sim: Simulator) -> None:
    url = "https://127.0.0.1:1/cat.png?v=2"
    result = await call(settings, "pix_upscale", {"image": url})
    assert model_calls(sim, UPSCALE) == [{"image": url, "scale_factor": 2}]
    # Pixazo (the simulator) tried that very URL; it cannot be fetched, so the job failed.
    assert sim.stats.fetches[-1]["url"] == url
    assert sim.stats.fetches[-1]["ok"] is False
    assert result.is_error
    # The caller is told what usually makes an edit's job fail (Pixazo's own words stay with operators).
    assert "Pixazo must be able to fetch the input image" in result.content[0].text
    row = edited(settings)
    assert row["status"] == "JOB_FAILED"
    assert row["parent_id"] is None
    assert row["prompt"] == ""
    assert row["parameters"] == {"image": url, "scale": 2}


@pytest.mark.parametrize(("tool", "arguments", "expected"), [
    ("pix_upscale", {"image": 1, "scale": 3}, "`scale` must be one of 2, 4, 6, 8 for crystal-upscaler"),
    ("pix_upscale", {"image": 1, "scale": True}, "`scale` must be one of 2, 4, 6, 8"),
    ("pix_outpaint", {"image": 1, "zoom_out_percentage": 95},
     "`zoom_out_percentage` must be an integer from 1 to 90 for image-outpaint"),
    ("pix_inpaint", {"image": 1, "mask": 1, "prompt": "p", "num_steps": 51},
     "`num_steps` must be an integer from 1 to 50 for sd-inpainting"),
    ("pix_inpaint", {"image": 1, "prompt": "p"}, "`mask` is required"),
    ("pix_upscale", {"image": True}, "`image` must be a generation id"),
    ("pix_upscale", {"image": "http://images.example.com/cat.png"}, "plain http is not accepted"),
    ("pix_upscale", {"image": "ftp://images.example.com/cat.png"}, "`image` must be a generation id"),
    ("pix_upscale", {"image": "javascript:alert(1)"}, "`image` must be a generation id"),
    ("pix_upscale", {"image": "pixazo://generations/1/thumbnail"}, "`image` must be a generation id"),
    ("pix_upscale", {"image": "https://user:pw@images.example.com/cat.png"}, "user name or password"),
    ("pix_upscale", {"image": 999}, "`image`: no generation with id 999"),
    ("pix_upscale", {"image": "pixazo://generations/999/image"}, "`image`: no generation with id 999"),
    ("pix_inpaint", {"image": 1, "mask": 999, "prompt": "p"}, "`mask`: no generation with id 999"),
])
async def test_refusals_record_and_send_nothing(settings: Settings, sim: Simulator, tool: str,
                                                arguments: dict[str, Any], expected: str) -> None:
    await parent(settings)  # generation 1 exists
    calls_before, rows_before = len(sim.stats.calls), len(rows(settings.db_path))
    result = await call(settings, tool, arguments)
    assert result.is_error
    text = result.content[0].text
    assert expected in text
    assert "Nothing was recorded or sent to Pixazo" in text
    assert len(sim.stats.calls) == calls_before
    assert len(rows(settings.db_path)) == rows_before


async def test_a_generation_without_an_image_is_refused(settings: Settings, sim: Simulator) -> None:
    sim.push(Fault("http", status=400, body='{"error": "bad prompt"}'))
    failed = await call(settings, "pix_generate", {"prompt": "p"})
    assert failed.is_error
    calls_before = len(sim.stats.calls)
    result = await call(settings, "pix_remove_background", {"image": 1})
    assert result.is_error
    assert "`image`: generation 1 has no image (status HTTP_400)" in result.content[0].text
    assert len(sim.stats.calls) == calls_before
    assert len(rows(settings.db_path)) == 1


async def test_another_callers_generation_is_not_found_under_own(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, history_visibility="own", poll_base_s=0.02,
                             auth_tokens="alice:tok-alice-0123456789,bob:tok-bob-0123456789")
    # Callers come from bearer tokens: a real server, two clients.
    async with live_server(settings) as live:
        async with http_client(live, {"Authorization": "Bearer tok-alice-0123456789"}) as alice:
            made = await alice.call_tool("pix_generate", {"prompt": "alice's fox"})
            assert not made.is_error
        async with http_client(live, {"Authorization": "Bearer tok-bob-0123456789"}) as bob:
            refused = await bob.call_tool("pix_upscale", {"image": made.structured_content["id"]})
        assert model_calls(sim, UPSCALE) == []
        assert len(rows(settings.db_path)) == 1
        async with http_client(live, {"Authorization": "Bearer tok-alice-0123456789"}) as alice:
            allowed = await alice.call_tool("pix_upscale", {"image": made.structured_content["id"]})
    assert refused.is_error
    assert f"no generation with id {made.structured_content['id']}" in refused.content[0].text
    assert not allowed.is_error, allowed.content[0].text
    assert len(model_calls(sim, UPSCALE)) == 1
    assert [r["caller"] for r in rows(settings.db_path)] == ["alice", "alice"]


async def test_a_stale_pixazo_url_is_still_sent_without_a_public_url(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.02, upstream_url_fresh_s=0)
    source = await parent(settings)
    result = await call(settings, "pix_upscale", {"image": source["id"]})
    assert not result.is_error, result.content[0].text
    # Nothing better exists without PIXAZO_PUBLIC_URL: the Pixazo URL, whatever its age.
    assert model_calls(sim, UPSCALE)[0]["image"] == source["image_url"]


async def test_the_edit_pixel_cap_still_refuses_what_is_over_it(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.02, max_edit_pixels=2048 * 2048 - 1)
    source = await parent(settings)
    result = await call(settings, "pix_upscale", {"image": source["id"]})
    row = edited(settings)
    assert row["status"] == "DOWNLOAD_FAILED"
    assert row["image_path"] is None
    assert "the image is 2048x2048 pixels, over the 4194303-pixel limit" in row["error"]
    # The image was made (and paid for): the caller still gets Pixazo's URL.
    assert not result.is_error
    assert result.structured_content["image_url"].endswith(".png")


async def test_a_bomb_from_an_edit_is_refused_from_its_header(settings: Settings, sim: Simulator) -> None:
    source = await parent(settings)
    sim.push(Fault("url", body=sim.url + "/_sim/huge.png?side=12000"))
    await call(settings, "pix_upscale", {"image": source["id"]})
    row = edited(settings)
    assert row["status"] == "DOWNLOAD_FAILED"
    assert "12000x12000 pixels, over the 67108864-pixel limit" in row["error"]


async def test_descriptions_give_the_prices_in_force(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"bria-rmbg-2.0": 0.02}))
    async with in_memory_client(make_settings(tmp_path, prices_file=prices)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "Costs $0.07 at scale 2, $0.12 at scale 4, $0.23 at scale 6, $0.45 at scale 8." in (
        tools["pix_upscale"].description or "")
    assert "Costs $0.02 a call." in (tools["pix_remove_background"].description or "")  # the operator's
    assert "Free on Pixazo" in (tools["pix_inpaint"].description or "")
    assert "the cost is unknown" in (tools["pix_outpaint"].description or "")
    for name in ("pix_upscale", "pix_remove_background", "pix_inpaint", "pix_outpaint"):
        hints = tools[name].annotations
        assert hints is not None
        assert (hints.read_only_hint, hints.open_world_hint, hints.destructive_hint) == (False, True, False)


async def test_a_budget_is_reached_exactly_by_upscales_and_the_next_is_refused_with_nothing_sent(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.02, poll_cap_s=0.05, max_retries=0,
                             daily_budget_usd=0.14)
    source = await parent(settings)  # SDXL is free: it never counts against the budget
    async with in_memory_client(settings) as client:
        first, second, third = [await client.call_tool("pix_upscale", {"image": source["id"], "scale": 2})
                                for _ in range(3)]
        status = (await client.call_tool("pix_status", {})).structured_content
    assert not first.is_error, first.content[0].text
    assert not second.is_error, second.content[0].text
    assert third.is_error
    assert "Daily budget reached" in third.content[0].text
    assert "Nothing was sent to Pixazo" in third.content[0].text
    assert len(model_calls(sim, UPSCALE)) == 2  # $0.07 + $0.07 = the $0.14 budget, to the cent
    refused = rows(settings.db_path)[-1]
    assert (refused["status"], refused["cost_usd"], refused["operation"]) == ("BUDGET_EXCEEDED", 0.0, "upscale")
    assert status["spent_today_usd"] == pytest.approx(0.14)
    assert status["budget_remaining_usd"] == pytest.approx(0.0)
