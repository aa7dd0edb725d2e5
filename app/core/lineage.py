"""Lineage: what a generation was made from and what was made from it, as a viewer may see them, and the
request that repeats a generation with some arguments changed (pix_regenerate). Knows no MCP and no HTTP.

Every step honours PIXAZO_HISTORY_VISIBILITY through the service: under `own`, another caller's
generation is neither shown as a parent or child nor walked through as an ancestor, and cannot be
repeated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.extras import ExtraCaps, extra_problem
from app.core.requests import GenerationRequest, RequestProblem, build_request, problems_for
from app.core.service import GenerationService
from app.errors import NotFoundError
from app.pixazo.gateway import CATALOGUE, GENERATE_MODELS, Endpoint
from app.settings import Settings
from app.storage.records import Generation

# Bounds on what one answer or page lists: a generation repeated a thousand times must not make
# get_generation's answer (or the gallery's page) a thousand entries long.
CHILDREN_SHOWN = 20
ANCESTORS_SHOWN = 10

# The arguments pix_regenerate may change: the union of the text-to-image models' arguments.
OVERRIDABLE: tuple[str, ...] = ("prompt", "negative_prompt", "width", "height", "num_steps", "guidance_scale",
                                "seed")
# What carries over when the model changes: the picture asked for. Steps and guidance are each model's
# own tuning (FLUX schnell's 4 steps would ruin an SDXL image; SDXL's 20 are outside FLUX's range), so
# the new model's defaults apply to them unless the caller gives them.
CARRIED_ACROSS_MODELS: tuple[str, ...] = ("prompt", "negative_prompt", "width", "height", "seed")

# Turns an input image as recorded (an id, a URI or a URL, as the caller gave it) into the URL Pixazo
# fetches, for the viewer (app.core.inputs' rules); raises RepeatProblem when it cannot.
InputResolver = Callable[[str, Any], Awaitable[str]]


@dataclass(frozen=True)
class Lineage:
    """A generation's parent and children, as far as the viewer may see them."""

    parent: Generation | None
    children: list[Generation]
    more_children: bool  # more children the viewer may see than `children` holds


async def visible(service: GenerationService, gen_id: int | None, viewer: str | None) -> Generation | None:
    if gen_id is None:
        return None
    try:
        return await service.get(gen_id, viewer)
    except NotFoundError:
        return None


async def lineage(service: GenerationService, gen: Generation, viewer: str | None,
                  limit: int = CHILDREN_SHOWN) -> Lineage:
    """The parent (None when there is none or the viewer may not see it) and the newest `limit` children."""
    parent = await visible(service, gen.parent_id, viewer)
    found = await service.children(gen.id, viewer, limit + 1)
    return Lineage(parent=parent, children=found[:limit], more_children=len(found) > limit)


async def ancestors(service: GenerationService, gen: Generation, viewer: str | None,
                    limit: int = ANCESTORS_SHOWN) -> list[Generation]:
    """The parent, its parent, and so on (nearest first), at most `limit`; the walk stops at the first
    one the viewer may not see, so nothing beyond a hidden row is revealed either."""
    found: list[Generation] = []
    seen = {gen.id}
    parent_id = gen.parent_id
    while parent_id is not None and parent_id not in seen and len(found) < limit:
        parent = await visible(service, parent_id, viewer)
        if parent is None:
            break
        found.append(parent)
        seen.add(parent.id)
        parent_id = parent.parent_id
    return found


class RepeatProblem(ValueError):
    """The generation cannot be repeated as asked; the message is for the caller."""


@dataclass(frozen=True)
class Repeat:
    """The checked request that repeats a generation, and the recorded arguments left behind (a change of
    model: those the new model does not take, or that do not fit it, or are its own tuning)."""

    request: GenerationRequest
    not_carried: list[str] = field(default_factory=list)


def _endpoint_of(source: Generation) -> Endpoint:
    endpoint = CATALOGUE.get(source.model)
    if endpoint is None or endpoint.operation != source.operation:
        raise RepeatProblem(
            f"generation {source.id} was made by `{source.model}` ({source.operation}), which is not in this "
            "server's catalogue, so it cannot be repeated")
    return endpoint


async def repeat_request(settings: Settings, source: Generation, overrides: Mapping[str, Any], *,
                         resolve: InputResolver, model: str | None = None) -> Repeat:
    """The request that repeats `source` (a row the caller may see) with `overrides` (None = keep).

    The row's model, operation and recorded arguments are taken as they were sent (its extra arguments are
    kept again, never sent); `model` may change only a text-to-image generation's model, among those
    models. Input images (recorded as the caller gave them) are resolved again with `resolve`.
    Raises RepeatProblem, or RequestProblem naming the model and the range of a value that does not fit.
    """
    endpoint = _endpoint_of(source)
    target = endpoint
    if model is not None and model != source.model:
        if source.operation != "generate":
            raise RepeatProblem(
                f"`model` can be changed only when repeating a text-to-image generation; generation {source.id} "
                f"is {source.operation.replace('_', ' ')} ({source.model})")
        if model not in GENERATE_MODELS:
            raise RepeatProblem(f"`model` must be one of {', '.join(GENERATE_MODELS)}")
        target = CATALOGUE[model]
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise RepeatProblem(f"pix_regenerate takes no `{unknown[0]}`")
    params = source.parameters
    # parameters_json holds the arguments as the caller named them (defaults merged) and the extra ones.
    recorded = {name: params[name] for name in endpoint.args if name in params and params[name] is not None
                and name != "prompt"}
    extra = {name: value for name, value in params.items() if name not in endpoint.args}
    if "prompt" in endpoint.args:
        recorded["prompt"] = source.prompt
    not_carried: list[str] = []
    if target is not endpoint:
        kept = {name: value for name, value in recorded.items()
                if name in CARRIED_ACROSS_MODELS and name in target.args and not problems_for(target, {name: value})}
        not_carried = sorted(set(recorded) - set(kept))
        recorded = kept
    given = {**recorded, **{name: value for name, value in overrides.items() if value is not None}}
    if problems := problems_for(target, given):
        raise RequestProblem(problems)
    caps = ExtraCaps(count=settings.max_extra_arguments, depth=settings.max_extra_depth,
                     size=settings.max_extra_bytes)
    if (problem := extra_problem(extra, caps)) is not None:  # the caps may have been lowered since
        raise RepeatProblem(f"the generation's extra arguments cannot be kept again: {problem}")
    inputs: dict[str, str] = {}
    for name, arg in target.args.items():
        if arg.kind != "image" or given.get(name) is None:
            continue
        inputs[name] = await resolve(name, given[name])
    # A model without a prompt (an upscale) keeps the row's prompt: the words of the image it came from.
    row_prompt = None if "prompt" in target.args else source.prompt
    # The row's prompt is a style's expanded prompt, repeated as sent: it is still in that style, unless the
    # caller gives a prompt of their own (sent as given: pix_regenerate takes no `style`).
    style = source.style if overrides.get("prompt") is None else None
    request = build_request(settings, target, given, extra=extra, inputs=inputs, parent_id=source.id,
                            prompt=row_prompt, style=style)
    return Repeat(request=request, not_carried=not_carried)
