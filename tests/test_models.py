"""pix_generate's `model`: each model's path, wire names, defaults, answer shape and ranges (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from app.pixazo.gateway import CATALOGUE
from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import in_memory_client, make_settings, rows
from tests.test_generate import BASE, Upstream

LIGHTNING = BASE + CATALOGUE["sdxl-lightning"].path
FLUX = BASE + CATALOGUE["flux-schnell"].path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, BASE)


@pytest.fixture
def upstream(sim: Simulator) -> Any:
    """Pixazo's API faked by aioresponses; the image itself comes from the simulator's image route (a
    real server: a real-size PNG of 1024 x 1024)."""
    with Upstream(passthrough=[sim.url]) as mocked:
        yield mocked


@pytest.fixture
def image(sim: Simulator) -> str:
    return sim.url + "/images/7-1024x1024-0.png"


async def call(settings: Settings, arguments: dict[str, Any]) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool("pix_generate", arguments)


def bodies(upstream: Any, url: str) -> list[dict[str, Any]]:
    return [r.kwargs["json"] for r in upstream.requests.get(("POST", URL(url)), [])]


async def test_lightning_sends_its_own_field_names(settings: Settings, upstream: Any, image: str) -> None:
    upstream.post(LIGHTNING, payload={"imageUrl": image})
    result = await call(settings, {"prompt": "a fox", "model": "sdxl-lightning", "negative_prompt": "blur",
                                   "guidance_scale": 3})
    assert not result.is_error, result.content[0].text
    assert bodies(upstream, LIGHTNING) == [{"prompt": "a fox", "negativePrompt": "blur", "width": 1024,
                                            "height": 1024, "num_steps": 20, "guidance": 3.0, "seed": 42}]
    (row,) = rows(settings.db_path)
    assert row["status"] == "SUCCESS"
    assert (row["model"], row["operation"], row["parent_id"], row["cost_usd"]) == (
        "sdxl-lightning", "generate", None, 0.0)  # Lightning is free on Pixazo's price list
    # recorded as the caller named them, so the row can be repeated with the same tool arguments
    assert '"guidance_scale": 3.0' in row["parameters_json"]
    assert result.structured_content["parameters"]["negative_prompt"] == "blur"


async def test_flux_takes_its_defaults_and_answers_in_output(settings: Settings, upstream: Any, image: str,
                                                             sim: Simulator) -> None:
    upstream.post(FLUX, payload={"output": image})
    result = await call(settings, {"prompt": "a fox", "model": "flux-schnell", "seed": 9})
    assert not result.is_error, result.content[0].text
    # no negative prompt, no guidance; its own default of 4 steps (not SDXL's 20)
    assert bodies(upstream, FLUX) == [{"prompt": "a fox", "width": 1024, "height": 1024, "num_steps": 4,
                                       "seed": 9}]
    assert result.structured_content["image_url"] == image
    assert result.structured_content["image_bytes"] > len(sim.image_bytes(image)) > 1_000_000  # with its XMP


async def test_sdxl_stays_the_default_with_the_operators_defaults(tmp_path: Path, upstream: Any,
                                                                image: str) -> None:
    settings = make_settings(tmp_path, BASE, default_num_steps=12)
    upstream.post(BASE + CATALOGUE["sdxl"].path, payload={"imageUrl": image})
    assert not (await call(settings, {"prompt": "p"})).is_error
    assert bodies(upstream, BASE + CATALOGUE["sdxl"].path)[0]["num_steps"] == 12
    (row,) = rows(settings.db_path)
    assert (row["model"], row["operation"], row["cost_usd"]) == ("sdxl", "generate", 0.0)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"negative_prompt": "blur"}, "flux-schnell takes no `negative_prompt`"),
        ({"guidance_scale": 5}, "flux-schnell takes no `guidance_scale`"),
        ({"num_steps": 9}, "`num_steps` must be an integer from 1 to 8 for flux-schnell"),
        ({"width": 1536}, "`width` must be an integer from 512 to 1024, a multiple of 8 for flux-schnell"),
    ],
)
async def test_what_a_model_does_not_take_is_refused_before_anything_is_sent(
        settings: Settings, upstream: Any, arguments: dict[str, Any], named: str) -> None:
    result = await call(settings, {"prompt": "p", "model": "flux-schnell", **arguments})
    assert result.is_error
    assert named in result.content[0].text
    assert "Nothing was recorded or sent to Pixazo" in result.content[0].text
    assert not [k for k in upstream.requests if k[0] == "POST"]
    assert rows(settings.db_path) == []


async def test_an_unknown_model_is_refused_naming_the_choices(settings: Settings, upstream: Any) -> None:
    result = await call(settings, {"prompt": "p", "model": "dall-e"})
    assert result.is_error
    assert "sdxl-lightning" in result.content[0].text
    assert not [k for k in upstream.requests if k[0] == "POST"]


async def test_the_schema_lists_the_models(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "pix_generate"]
    assert tool.input_schema["properties"]["model"]["enum"] == ["sdxl", "sdxl-lightning", "flux-schnell"]
    assert tool.input_schema["properties"]["model"]["default"] == "sdxl"


async def test_no_schema_advertises_a_default_or_a_bound_that_one_model_refuses(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    generate = tools["pix_generate"].input_schema["properties"]
    # A client that fills in advertised defaults would send SDXL's 20 steps and guidance 5 to FLUX,
    # which refuses both: those two defaults are in the descriptions, per model, not in the schema.
    assert "default" not in generate["num_steps"]
    assert "default" not in generate["guidance_scale"]
    assert "flux-schnell 1-8, default 4" in generate["num_steps"]["description"]
    assert generate["seed"]["default"] == 42  # the same for every model
    # pix_regenerate spans every model: it advertises the widest range (inpainting takes 50 steps)
    regenerate = tools["pix_regenerate"].input_schema["properties"]
    steps = regenerate["num_steps"]  # optional: {"type": ["integer", "null"], ...} in the lean schema
    assert "integer" in steps["type"]
    assert (steps["minimum"], steps["maximum"]) == (1, 50)
