"""Team styles (issue 26, PIXAZO_STYLES_FILE): applied, overridden by the caller, recorded, offered as MCP
prompts through the SDK client, shown in the gallery, and a bad styles file refused at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from pydantic import SecretStr

from app.core.styles import StylesFileError, parse_styles
from app.pixazo.gateway import CATALOGUE, EDITORS
from app.pixazo.simulator import Fault, Simulator
from app.settings import Settings
from tests.conftest import in_memory_client, live_server, make_settings, rows
from tests.test_startup import pixazo

SDXL, LIGHTNING, FLUX = (CATALOGUE[m].path for m in ("sdxl", "sdxl-lightning", "flux-schnell"))
INPAINT = EDITORS["inpaint"].path

STYLES_YAML = """\
# The design team's house styles.
ink:
  description: Ink wash painting, black on rice paper
  prompt: "{prompt}, ink wash painting, sumi-e, rice paper"
  negative_prompt: colour, photo
  arguments:
    guidance_scale: 7
    num_steps: 12
poster:
  description: Bold flat poster in the brand colours
  prompt: "Flat vector poster of {prompt}. Brand colours: teal and coral."
  model: sdxl-lightning
  arguments: {width: 1536, height: 768, seed: 7}
"""


def styles_file(tmp_path: Path, text: str = STYLES_YAML, name: str = "styles.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def settings(tmp_path: Path, sim: Simulator) -> Settings:
    return make_settings(tmp_path, sim.url, inline_image="none", styles_file=styles_file(tmp_path))


def bodies(sim: Simulator, path: str) -> list[dict[str, Any]]:
    return [c["body"] for c in sim.stats.calls if c["method"] == "POST" and c["path"] == path]


def last_row(settings: Settings) -> dict[str, Any]:
    row = rows(settings.db_path)[-1]
    return {**row, "parameters": json.loads(row["parameters_json"])}


def texts(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


# --- the tools' `style` ---------------------------------------------------------------------------

async def test_without_a_styles_file_no_tool_takes_a_style_and_there_are_no_prompts(
        tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        tools = (await client.list_tools()).tools
        prompts = (await client.list_prompts()).prompts
    assert all("style" not in tool.input_schema.get("properties", {}) for tool in tools)
    assert prompts == []


async def test_the_image_making_tools_offer_the_styles_by_name_with_their_descriptions(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    styled = {name for name, tool in tools.items() if "style" in tool.input_schema.get("properties", {})}
    assert styled == {"pix_generate", "pix_inpaint"}
    for name in styled:
        prop = tools[name].input_schema["properties"]["style"]
        assert prop["enum"] == ["ink", "poster"]
        assert "style" not in tools[name].input_schema.get("required", [])
        assert "`ink`: Ink wash painting, black on rice paper" in prop["description"]
    assert "(sdxl-lightning)" in tools["pix_generate"].input_schema["properties"]["style"]["description"]
    assert "model does not apply" in tools["pix_inpaint"].input_schema["properties"]["style"]["description"]


async def test_a_style_expands_the_prompt_gives_its_defaults_and_is_recorded(
        settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a heron in reeds", "style": "ink"})
        listed = await client.call_tool("list_generations", {})
        detail = await client.call_tool("get_generation", {"id": 1})
    assert not result.is_error, texts(result)
    expanded = "a heron in reeds, ink wash painting, sumi-e, rice paper"
    assert bodies(sim, SDXL) == [{"prompt": expanded, "negative_prompt": "colour, photo", "width": 1024,
                                  "height": 1024, "num_steps": 12, "guidance_scale": 7, "seed": 42}]
    row = last_row(settings)
    assert (row["style"], row["prompt"], row["status"], row["model"]) == ("ink", expanded, "SUCCESS", "sdxl")
    # parameters_json records what was sent, the style's values included
    assert row["parameters"] == {"negative_prompt": "colour, photo", "width": 1024, "height": 1024,
                                 "num_steps": 12, "guidance_scale": 7, "seed": 42}
    assert result.structured_content["style"] == "ink"
    assert result.structured_content["prompt"] == expanded
    assert listed.structured_content["generations"][0]["style"] == "ink"
    assert "style ink" in texts(listed)
    assert detail.structured_content["style"] == "ink"
    assert "in style ink" in texts(detail)


async def test_a_styles_model_is_used_unless_the_caller_chooses_one(settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        own = await client.call_tool("pix_generate", {"prompt": "a lighthouse", "style": "poster"})
        chosen = await client.call_tool("pix_generate", {"prompt": "a kettle", "style": "poster",
                                                         "model": "flux-schnell", "height": 512})
    assert not own.is_error
    assert not chosen.is_error
    assert bodies(sim, LIGHTNING) == [{
        "prompt": "Flat vector poster of a lighthouse. Brand colours: teal and coral.", "width": 1536,
        "height": 768, "num_steps": 20, "guidance": 5, "seed": 7}]
    # flux-schnell takes at most 1024 wide: the style's 1536 is not applied (its default is), and the
    # result says so; the caller's height wins over the style's; the style's seed fits and applies.
    assert bodies(sim, FLUX) == [{"prompt": "Flat vector poster of a kettle. Brand colours: teal and coral.",
                                  "width": 1024, "height": 512, "num_steps": 4, "seed": 7}]
    assert 'Style "poster": not applied with flux-schnell: width (the model\'s defaults applied).' in texts(chosen)
    assert [(r["style"], r["model"]) for r in rows(settings.db_path)] == [
        ("poster", "sdxl-lightning"), ("poster", "flux-schnell")]


async def test_the_callers_own_arguments_win_over_the_styles(settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {
            "prompt": "a crane", "style": "ink", "negative_prompt": "text", "num_steps": 18, "seed": 3})
    assert not result.is_error, texts(result)
    assert bodies(sim, SDXL) == [{"prompt": "a crane, ink wash painting, sumi-e, rice paper",
                                  "negative_prompt": "text", "width": 1024, "height": 1024, "num_steps": 18,
                                  "guidance_scale": 7, "seed": 3}]
    assert "not applied" not in texts(result)


async def test_a_call_without_a_style_is_sent_as_given_and_recorded_without_one(
        settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a plain fox"})
    assert not result.is_error
    assert bodies(sim, SDXL)[0]["prompt"] == "a plain fox"
    assert "negative_prompt" not in bodies(sim, SDXL)[0]
    assert (last_row(settings)["style"], result.structured_content["style"]) == (None, None)


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"prompt": "a fox", "style": "watercolour"}, "`style`"),
    ({"prompt": "x" * 1990, "style": "ink"},
     "`prompt` is too long for style \"ink\": with the style it is 2029 characters and sdxl takes at most 2000, "
     "so the prompt may have 1961"),
    ({"prompt": "a fox", "style": "ink", "num_steps": 30}, "`num_steps` must be an integer from 1 to 20"),
])
async def test_a_bad_styled_call_is_refused_before_anything_is_recorded_or_sent(
        settings: Settings, sim: Simulator, arguments: dict[str, Any], expected: str) -> None:
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", arguments)
    assert result.is_error
    assert expected in texts(result)
    assert "Nothing was recorded or sent to Pixazo." in texts(result)
    assert rows(settings.db_path) == []
    assert sim.stats.requests == 0


async def test_a_failed_styled_call_ends_in_a_terminal_row_that_keeps_its_style(
        settings: Settings, sim: Simulator) -> None:
    sim.push(Fault(kind="http", status=500, body='{"error": "GPU on fire"}'))
    async with in_memory_client(settings.model_copy(update={"max_retries": 0})) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a heron", "style": "ink"})
    assert result.is_error
    row = last_row(settings)
    assert (row["status"], row["style"], row["prompt"]) == (
        "HTTP_500", "ink", "a heron, ink wash painting, sumi-e, rice paper")


async def test_inpainting_takes_a_style_without_its_model(settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        source = (await client.call_tool("pix_generate", {"prompt": "a pond"})).structured_content
        mask = (await client.call_tool("pix_generate", {"prompt": "a white disc"})).structured_content
        result = await client.call_tool("pix_inpaint", {"image": source["id"], "mask": mask["id"],
                                                        "prompt": "a lotus", "style": "poster", "seed": 9})
    assert not result.is_error, texts(result)
    # sd-inpainting's sides go up to 1536 (so the style's width and height apply); the caller's seed wins
    assert bodies(sim, INPAINT) == [{
        "prompt": "Flat vector poster of a lotus. Brand colours: teal and coral.", "imageUrl": source["image_url"],
        "maskUrl": mask["image_url"], "width": 1536, "height": 768, "seed": 9}]
    row = last_row(settings)
    assert (row["operation"], row["model"], row["style"], row["prompt"]) == (
        "inpaint", "sd-inpainting", "poster", "Flat vector poster of a lotus. Brand colours: teal and coral.")


async def test_regenerating_a_styled_generation_keeps_its_style_unless_the_prompt_changes(
        settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        await client.call_tool("pix_generate", {"prompt": "a heron", "style": "ink"})
        same = await client.call_tool("pix_regenerate", {"id": 1, "seed": 5})
        other = await client.call_tool("pix_regenerate", {"id": 1, "prompt": "a plain heron"})
    assert not same.is_error
    assert not other.is_error
    sent = bodies(sim, SDXL)
    assert sent[1] == {**sent[0], "seed": 5}
    assert sent[2]["prompt"] == "a plain heron"
    assert [(r["style"], r["parent_id"]) for r in rows(settings.db_path)] == [("ink", None), ("ink", 1), (None, 1)]


async def test_the_style_column_round_trips_on_both_engines(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", styles_file=styles_file(tmp_path),
                             database_url=SecretStr(database_url))
    async with in_memory_client(settings) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a heron", "style": "ink"})
        listed = await client.call_tool("list_generations", {"query": "sumi"})
    assert not made.is_error, texts(made)
    assert [(g["id"], g["style"]) for g in listed.structured_content["generations"]] == [
        (made.structured_content["id"], "ink")]


# --- the prompts ----------------------------------------------------------------------------------

async def test_each_style_is_a_prompt_that_asks_for_the_tool_with_the_style(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        got = await client.get_prompt("ink", {"subject": "a heron in reeds"})
        with pytest.raises(MCPError, match=r'Prompt "ink" needs `subject`: what the image should show\.') as caught:
            await client.get_prompt("ink", {})
        assert caught.value.code == INVALID_PARAMS
        with pytest.raises(MCPError, match=r"`subject` is at most 2000 characters"):
            await client.get_prompt("ink", {"subject": "x" * 2001})
    assert list(prompts) == ["ink", "poster"]
    assert prompts["ink"].description == "Ink wash painting, black on rice paper"
    assert [(a.name, a.required) for a in prompts["ink"].arguments or []] == [("subject", True)]
    (message,) = got.messages
    assert message.role == "user"
    text = message.content.text  # type: ignore[union-attr]
    assert 'Call pix_generate with prompt="a heron in reeds" and style="ink"' in text
    assert "Ink wash painting" in text


# --- the gallery ----------------------------------------------------------------------------------

async def test_the_gallery_shows_the_style(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        await client.call_tool("pix_generate", {"prompt": "a heron", "style": "ink"})
        await client.call_tool("pix_generate", {"prompt": "a plain fox"})
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        index = (await http.get(live.url + "/gallery")).text
        styled, plain = [(await http.get(f"{live.url}/gallery/{i}")).text for i in (1, 2)]
    assert index.count('<span class="style" title="Style">ink</span>') == 1
    assert '<dd id="style">ink</dd>' in styled
    assert 'id="style"' not in plain


# --- the file, and refusals at start ----------------------------------------------------------------

def test_a_json_styles_file_is_read_like_a_yaml_one(tmp_path: Path, sim: Simulator) -> None:
    from app.core.styles import load_styles

    document = {"ink": {"description": "Ink", "prompt": "{prompt}, ink"}}
    path = styles_file(tmp_path, json.dumps(document), "styles.json")
    (style,) = load_styles(make_settings(tmp_path, sim.url, styles_file=path)).values()
    assert (style.name, style.expand("a cat"), style.model, dict(style.arguments)) == ("ink", "a cat, ink", None, {})


GOOD = {"description": "Ink", "prompt": "{prompt}, ink"}


@pytest.mark.parametrize(("document", "expected"), [
    ({"ink": {**GOOD, "prompt": "ink wash painting"}}, 'style "ink": prompt must contain {prompt} once'),
    ({"ink": {**GOOD, "prompt": "{prompt} and {prompt}"}}, 'style "ink": prompt must contain {prompt} once'),
    ({"ink": {"prompt": "{prompt}"}}, 'style "ink": `description` must be a non-empty string'),
    ({"ink": {**GOOD, "model": "midjourney"}}, 'style "ink": `model` must be one of sdxl, sdxl-lightning, '
                                               "flux-schnell"),
    ({"ink": {**GOOD, "model": "sd-inpainting"}}, 'style "ink": `model` must be one of'),
    ({"ink": {**GOOD, "arguments": {"num_steps": 30}}},
     'style "ink": `num_steps` must be an integer from 1 to 20 for sdxl'),
    ({"ink": {**GOOD, "model": "flux-schnell", "arguments": {"guidance_scale": 7}}},
     'style "ink": flux-schnell takes no `guidance_scale`'),
    ({"ink": {**GOOD, "model": "flux-schnell", "negative_prompt": "blur"}},
     'style "ink": flux-schnell takes no `negative_prompt`'),
    ({"ink": {**GOOD, "arguments": {"prompt": "x"}}}, 'style "ink": `arguments` takes no `prompt`'),
    ({"ink": {**GOOD, "arguments": {"seed": True}}}, 'style "ink": `seed` must be an integer'),
    ({"ink": {**GOOD, "negative-prompt": "x"}}, 'style "ink": unknown field `negative-prompt`'),
    ({"ink wash": GOOD}, 'style "ink wash": a name is a letter then letters, digits, - or _'),
    ({"ink": GOOD, "INK": GOOD}, 'style "INK": same name as "ink" but for case'),
    ({"ink": "ink wash painting"}, 'style "ink": it accepts a mapping of description, prompt'),
    (["ink"], "it accepts a mapping of style name -> its fields"),
])
def test_a_bad_style_is_refused_naming_the_file_and_the_entry(document: Any, expected: str) -> None:
    with pytest.raises(StylesFileError) as caught:
        parse_styles(document, "/etc/pixazo/styles.yaml")
    assert str(caught.value).startswith(f"PIXAZO_STYLES_FILE /etc/pixazo/styles.yaml: {expected}")


@pytest.mark.parametrize(("text", "expected"), [
    ("ink: {description: a, prompt: '{prompt}'}\nink: {description: b, prompt: '{prompt}'}\n",
     "key 'ink' appears twice (line 2)"),
    ("ink: [unclosed\n", "not valid YAML"),
])
def test_a_styles_file_yaml_would_misread_is_refused(tmp_path: Path, sim: Simulator, text: str, expected: str) -> None:
    from app.core.styles import load_styles

    path = styles_file(tmp_path, text)
    with pytest.raises(StylesFileError, match=r"^PIXAZO_STYLES_FILE .*styles.yaml: " + expected.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        load_styles(make_settings(tmp_path, sim.url, styles_file=path))


@pytest.mark.parametrize("command", ["serve", "stdio"])
def test_a_bad_styles_file_stops_the_server_in_one_line_with_exit_code_2(tmp_path: Path, command: str) -> None:
    path = styles_file(tmp_path, "ink:\n  description: Ink\n  prompt: ink wash painting\n")
    done = pixazo(tmp_path, command, PIXAZO_STYLES_FILE=str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f'pixazo-mcp: PIXAZO_STYLES_FILE {path}: style "ink": prompt must contain {{prompt}} once\n'
    missing = pixazo(tmp_path, command, PIXAZO_STYLES_FILE=str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"pixazo-mcp: PIXAZO_STYLES_FILE {tmp_path / 'absent.yaml'}: cannot be read")


async def test_a_styled_batch_gives_every_image_the_style_and_starts_from_the_styles_seed(
        settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        inked = await client.call_tool("pix_generate", {"prompt": "a heron", "style": "ink", "n": 2})
        posters = await client.call_tool("pix_generate", {"prompt": "a fox", "style": "poster", "n": 2})
    assert not inked.is_error, texts(inked)
    assert not posters.is_error, texts(posters)
    made = rows(settings.db_path)
    assert len(made) == 4
    assert {(r["style"], r["prompt"]) for r in made[:2]} == {("ink", "a heron, ink wash painting, sumi-e, rice paper")}
    assert len({r["batch_id"] for r in made[:2]}) == 1
    assert {r["style"] for r in made[2:]} == {"poster"}
    assert [json.loads(r["parameters_json"])["seed"] for r in made[2:]] == [7, 8]  # the style's seed counts as given
    assert [b["seed"] for b in bodies(sim, LIGHTNING)] == [7, 8]
