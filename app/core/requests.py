"""A call to one Pixazo model, checked against that model's catalogue entry before anything is sent.

Every tool (pix_generate and its `model`, the editing tools, pix_regenerate) builds its request here,
so a value outside a model's range, or an argument a model does not take, is refused the same way
everywhere: naming the model and the range, with nothing recorded or sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.pixazo.gateway import Arg, Endpoint, Limit
from app.settings import Settings


class RequestProblem(ValueError):
    """The arguments do not fit the model; `problems` says each way, for the caller."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class GenerationRequest:
    """A checked call: the model, every argument's value (our names; None = not sent), the input images
    resolved to URLs Pixazo can fetch, and the caller's extra arguments (kept, never sent)."""

    endpoint: Endpoint
    values: dict[str, Any]
    prompt: str
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    parent_id: int | None = None
    style: str | None = None  # the team style applied (its values are already in `values`)

    @property
    def model(self) -> str:
        return self.endpoint.model

    @property
    def operation(self) -> str:
        return self.endpoint.operation

    def upstream_body(self) -> dict[str, Any]:
        return self.endpoint.body({**self.values, **self.inputs})

    def recorded_parameters(self) -> dict[str, Any]:
        """What `parameters_json` keeps: the arguments sent (as the caller named them, input images as
        the caller gave them, never a signed link) and every extra argument."""
        sent = {k: v for k, v in self.values.items() if v is not None and k != "prompt"}
        return {**self.extra, **sent}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def range_text(name: str, arg: Arg | None = None, limit: Limit | None = None) -> str:
    """`name` must be ... : the wording every refusal of a value uses."""
    limit = limit if limit is not None else (arg.limit if arg is not None else None)
    if arg is not None and arg.choices:
        return f"`{name}` must be one of {', '.join(str(c) for c in arg.choices)}"
    if limit is None:
        return f"`{name}` is not valid"
    low, high = _num(limit.minimum), _num(limit.maximum)
    if (arg is not None and arg.kind == "text") or (arg is None and name in ("prompt", "negative_prompt")):
        return f"`{name}` must be a string of {low} to {high} characters"
    kind = "a number" if (arg is not None and arg.kind == "number") or name == "guidance_scale" else "an integer"
    step = f", a multiple of {limit.multiple_of}" if limit.multiple_of else ""
    return f"`{name}` must be {kind} from {low} to {high}{step}"


def _fits(arg: Arg, value: Any) -> bool:
    """The wire rule (`Arg.accepts`), except that an input image is still as the caller gave it: a
    generation id, a URI or a URL (resolved to a URL later)."""
    if arg.kind == "image" and isinstance(value, int) and not isinstance(value, bool):
        return True
    return arg.accepts(value)


def problems_for(endpoint: Endpoint, given: Mapping[str, Any]) -> list[str]:
    """Each way the given values (None = not given) do not fit the model."""
    problems: list[str] = []
    for name, value in given.items():
        if value is None:
            continue
        arg = endpoint.args.get(name)
        if arg is None:
            problems.append(f"{endpoint.model} takes no `{name}`")
        elif not _fits(arg, value):
            problems.append(f"{range_text(name, arg)} for {endpoint.model}")
        elif name == "prompt" and isinstance(value, str) and not value.strip():
            problems.append("`prompt` must say something: it is only spaces")  # an image of nothing, paid for
    return problems


def _default(settings: Settings, endpoint: Endpoint, name: str, arg: Arg) -> Any:
    """The value sent when the caller gives none: the operator's PIXAZO_DEFAULT_* for SDXL (the seed
    tool's model), the catalogue's for every other model (their ranges differ)."""
    if endpoint.model == "sdxl":
        configured = {"width": settings.default_width, "height": settings.default_height,
                      "num_steps": settings.default_num_steps,
                      "guidance_scale": settings.default_guidance_scale, "seed": settings.default_seed}
        if name in configured:
            return configured[name]
    return arg.default


def build_request(settings: Settings, endpoint: Endpoint, given: Mapping[str, Any], *,
                  extra: Mapping[str, Any] | None = None, inputs: Mapping[str, str] | None = None,
                  parent_id: int | None = None, prompt: str | None = None,
                  style: str | None = None) -> GenerationRequest:
    """Check the caller's values against the model and merge the defaults under them (caller values win).

    Raises RequestProblem naming the model and the range of each value that does not fit.
    """
    problems = problems_for(endpoint, given)
    if problems:
        raise RequestProblem(problems)
    values: dict[str, Any] = {}
    for name, arg in endpoint.args.items():
        value = given.get(name)
        values[name] = _default(settings, endpoint, name, arg) if value is None else value
    row_prompt = prompt if prompt is not None else str(values.get("prompt") or "")
    return GenerationRequest(endpoint=endpoint, values=values, prompt=row_prompt, extra=dict(extra or {}),
                             inputs=dict(inputs or {}), parent_id=parent_id, style=style)
