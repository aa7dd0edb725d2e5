"""Team styles (`PIXAZO_STYLES_FILE`): named prompt templates with default arguments, checked against the
catalogue at start-up, and applied to a call's values (the caller's own win). Knows no MCP and no HTTP.

The file (YAML, or JSON when its name ends in `.json`) maps each style's name to its fields:

    ink:
      description: Ink wash painting, black on rice paper
      prompt: "{prompt}, ink wash painting, sumi-e"    # {prompt} once: where the caller's words go
      negative_prompt: colour, photo                   # optional
      model: sdxl-lightning                            # optional: pix_generate's default model for it
      arguments: {guidance_scale: 7, num_steps: 12}    # optional: defaults for the model's arguments

A style's `model` is one of pix_generate's models; its `negative_prompt` and `arguments` must fit that
model (SDXL when it names none) exactly as a caller's values must. Anything else stops the start with
one line naming the entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.core.requests import problems_for
from app.core.settingsfiles import read_capped
from app.pixazo.gateway import CATALOGUE, GENERATE_MODELS, PROMPT, Endpoint
from app.settings import Settings, SettingsError

PLACEHOLDER = "{prompt}"
# Every style is in two tool schemas and is a prompt of its own: a team's handful, not a catalogue.
MAX_STYLES = 50
MAX_STYLES_FILE_BYTES = 256 * 1024
MAX_DESCRIPTION_CHARS = 200
# A name is an enum value in the tool schemas and a prompt (a slash command in most clients).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
FIELDS = ("description", "prompt", "negative_prompt", "model", "arguments")
# What `arguments` may set: pix_generate's tuning (the prompt, the negative prompt and the model are
# fields of their own).
ARGUMENTS = ("width", "height", "num_steps", "guidance_scale", "seed")


class StylesFileError(SettingsError):
    """The styles file cannot be used; one line naming the file and the entry."""


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    template: str  # contains PLACEHOLDER exactly once
    negative_prompt: str | None = None
    model: str | None = None  # one of GENERATE_MODELS; None: the tool's default
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def expand(self, subject: str) -> str:
        return self.template.replace(PLACEHOLDER, subject)

    def defaults(self) -> dict[str, Any]:
        """The values the style gives a call, under the caller's own."""
        out = dict(self.arguments)
        if self.negative_prompt is not None:
            out["negative_prompt"] = self.negative_prompt
        return out


@dataclass(frozen=True)
class Styled:
    """A call's values with a style applied, and the style's defaults the model did not take."""

    values: dict[str, Any]
    not_applied: list[str]


def apply_style(style: Style, endpoint: Endpoint, given: Mapping[str, Any]) -> Styled:
    """The caller's values (None: not given; `prompt` is the subject) with the style applied: the prompt
    expanded, and each style default the caller did not give, when `endpoint` takes it. A default the
    model does not take or that does not fit it (the caller chose another model) is left out and named,
    so the model's own default applies rather than refusing a call the caller cannot mend."""
    values = dict(given)
    values["prompt"] = style.expand(str(given.get("prompt") or ""))
    not_applied: list[str] = []
    for name, value in style.defaults().items():
        if values.get(name) is not None:
            continue  # the caller's own value wins
        if problems_for(endpoint, {name: value}):
            not_applied.append(name)
            continue
        values[name] = value
    return Styled(values, sorted(not_applied))


def prompt_problem(style: Style, endpoint: Endpoint, subject: str) -> str | None:
    """Why the expanded prompt does not fit the model's prompt length, in the caller's terms."""
    limit = endpoint.args["prompt"].limit if "prompt" in endpoint.args else None
    length = len(style.expand(subject))
    if limit is None or length <= limit.maximum:
        return None
    room = int(limit.maximum) - (len(style.template) - len(PLACEHOLDER))
    return (f"`prompt` is too long for style {json.dumps(style.name)}: with the style it is {length} characters and "
            f"{endpoint.model} takes at most {int(limit.maximum)}, so the prompt may have {room}")


# --- The file --------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice (YAML would keep the last one without a word)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise StylesFileError(f"key {key!r} appears twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StylesFileError(f"key {key!r} appears twice")
        out[key] = value
    return out


def read_styles_file(path: Path) -> Any:
    where = f"PIXAZO_STYLES_FILE {path}"
    raw = read_capped(path, where, MAX_STYLES_FILE_BYTES, StylesFileError)
    try:
        text = raw.decode("utf-8")
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_unique_json_object)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader that also refuses duplicate keys
    except StylesFileError as exc:
        raise StylesFileError(f"{where}: {exc}") from None
    except UnicodeDecodeError:
        raise StylesFileError(f"{where}: not UTF-8 text") from None
    except ValueError as exc:
        raise StylesFileError(f"{where}: not valid JSON ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise StylesFileError(f"{where}: not valid YAML{at} ({problem})") from None


def _text(entry: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{name}` must be a non-empty string")
    return value


def parse_style(name: Any, entry: Any) -> Style:
    """One entry, checked; raises ValueError saying what is wrong with it."""
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise ValueError("a name is a letter then letters, digits, - or _ (at most 40)")
    if not isinstance(entry, dict):
        raise ValueError(f"it accepts a mapping of {', '.join(FIELDS)}")
    unknown = [str(key) for key in entry if key not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field `{unknown[0]}` (it accepts {', '.join(FIELDS)})")
    description = _text(entry, "description", required=True) or ""
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"`description` is longer than {MAX_DESCRIPTION_CHARS} characters")
    template = _text(entry, "prompt", required=True) or ""
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"prompt must contain {PLACEHOLDER} once")
    if len(template) - len(PLACEHOLDER) + int(PROMPT.minimum) > PROMPT.maximum:
        raise ValueError(f"prompt leaves no room for the caller's words (prompts are at most {int(PROMPT.maximum)} "
                         "characters)")
    model = entry.get("model")
    if model is not None and model not in GENERATE_MODELS:
        raise ValueError(f"`model` must be one of {', '.join(GENERATE_MODELS)} (pix_generate's models)")
    arguments = entry.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError(f"`arguments` accepts a mapping of {', '.join(ARGUMENTS)}")
    for key in arguments:
        if key not in ARGUMENTS:
            raise ValueError(f"`arguments` takes no `{key}` (it takes {', '.join(ARGUMENTS)}; negative_prompt and "
                             "model are fields of their own)")
    style = Style(name=name, description=description.strip(), template=template,
                  negative_prompt=_text(entry, "negative_prompt", required=False), model=model,
                  arguments=dict(arguments))
    # The same checks a caller's values get, against the style's model.
    endpoint = CATALOGUE[model or GENERATE_MODELS[0]]
    if problems := problems_for(endpoint, style.defaults()):
        raise ValueError("; ".join(problems))
    return style


def parse_styles(document: Any, source: str) -> dict[str, Style]:
    """Check a styles document; raises StylesFileError naming the file and the entry."""
    where = f"PIXAZO_STYLES_FILE {source}"
    if document is None:
        return {}  # an empty file: no styles
    if not isinstance(document, dict):
        raise StylesFileError(f"{where}: it accepts a mapping of style name -> its fields")
    if len(document) > MAX_STYLES:
        raise StylesFileError(f"{where}: {len(document)} styles; at most {MAX_STYLES}")
    styles: dict[str, Style] = {}
    folded: dict[str, str] = {}
    for name, entry in document.items():
        try:
            style = parse_style(name, entry)
        except ValueError as exc:
            raise StylesFileError(f"{where}: style {json.dumps(str(name))}: {exc}") from None
        if name.casefold() in folded:
            raise StylesFileError(f"{where}: style {json.dumps(name)}: same name as "
                                  f"{json.dumps(folded[name.casefold()])} but for case (names are commands in clients)")
        folded[name.casefold()] = name
        styles[name] = style
    return styles


def load_styles(settings: Settings) -> dict[str, Style]:
    """The styles in force (none without PIXAZO_STYLES_FILE). Raises StylesFileError."""
    path = settings.styles_file
    if path is None:
        return {}
    return parse_styles(read_styles_file(path), str(path))
