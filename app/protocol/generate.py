"""pix_generate: its argument model (SDXL's bounds, each model's own checked after), and the tool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field, create_model
from pydantic_core import ErrorDetails

from app.core.batches import seeds_text, variations
from app.core.extras import ExtraCaps
from app.core.requests import RequestProblem, build_request, problems_for, range_text
from app.core.styles import Style, apply_style, prompt_problem
from app.pixazo.gateway import CATALOGUE, GENERATE_MODELS, SDXL_LIMITS
from app.protocol.arguments import CatalogueArgs
from app.protocol.batches import run_batch
from app.protocol.jobs import N_FIELD, WAIT_FIELD, run_request
from app.protocol.results import ImageOut, state_of
from app.protocol.styles import not_applied_note, style_field
from app.settings import Settings

PIX_GENERATE_DESCRIPTION = """An image from a prompt with Pixazo; 10-30 s. Extra arguments are kept (at most \
{count}, {size} bytes, {depth} deep), not sent."""


class _PixGenerateArgsBase(CatalogueArgs):
    """pix_generate's arguments: the schema's bounds are SDXL's (the widest); the chosen model's own
    ranges, and the arguments it does not take, are checked after."""

    passes_given: ClassVar[bool] = True

    @classmethod
    def _problem_text(cls, field: str, err: ErrorDetails) -> str:
        if field in SDXL_LIMITS:
            return range_text(field, limit=SDXL_LIMITS[field])
        return super()._problem_text(field, err)

    def _model_problems(self) -> list[str]:
        style = self.chosen_style()
        chosen = chosen_model(getattr(self, "model", None), self.given(), style)
        if not isinstance(chosen, str) or chosen not in CATALOGUE:
            return []
        endpoint = CATALOGUE[chosen]
        problems = problems_for(endpoint, {name: getattr(self, name)
                                           for name in self.given() - {"model", "wait", "style", "n"}})
        if style is not None and (problem := prompt_problem(style, endpoint, str(getattr(self, "prompt", "")))):
            problems.append(problem)
        return problems


def chosen_model(model: Any, given: frozenset[str], style: Style | None) -> Any:
    """The model a call uses: the caller's, else the style's, else the default (the caller's own wins)."""
    if "model" not in given and style is not None and style.model is not None:
        return style.model
    return model


def _unadvertised_default(schema: dict[str, Any]) -> None:
    """The default differs by model: a client that fills in advertised defaults would send SDXL's to FLUX."""
    schema.pop("default", None)


def _int_field(name: str, default: int, description: str | None, *, per_model: bool = False) -> Any:
    lim = SDXL_LIMITS[name]
    return (Annotated[int, Field(ge=int(lim.minimum), le=int(lim.maximum), multiple_of=lim.multiple_of,
                                 description=description,
                                 json_schema_extra=_unadvertised_default if per_model else None)], default)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _model_text() -> str:
    return "The model: " + "; ".join(f"`{m}` ({CATALOGUE[m].title})" for m in GENERATE_MODELS) + "."


def pix_generate_arguments(settings: Settings, styles: Mapping[str, Style] | None = None) -> type[ArgModelBase]:
    """The input model, with bounds from the model's limit table and defaults from the settings."""
    p, n, g = SDXL_LIMITS["prompt"], SDXL_LIMITS["negative_prompt"], SDXL_LIMITS["guidance_scale"]
    fields: dict[str, Any] = {
        "prompt": (Annotated[str, Field(min_length=int(p.minimum), max_length=int(p.maximum))], ...),
        "negative_prompt": (Annotated[str | None, Field(max_length=int(n.maximum),
                                                        description="Not flux-schnell.")], None),
        "width": _int_field("width", settings.default_width, "flux-schnell: at most 1024."),
        "height": _int_field("height", settings.default_height, "flux-schnell: at most 1024."),
        "num_steps": _int_field("num_steps", settings.default_num_steps, (
            f"Default {settings.default_num_steps}; flux-schnell 1-8, default 4."), per_model=True),
        "guidance_scale": (Annotated[float, Field(ge=g.minimum, le=g.maximum, description=(
            f"Default {_num(settings.default_guidance_scale)}; not flux-schnell."),
            json_schema_extra=_unadvertised_default)], settings.default_guidance_scale),
        "seed": _int_field("seed", settings.default_seed, None),
        "model": (Literal[GENERATE_MODELS], Field(default="sdxl")),
        **style_field(styles or {}, has_model=True),
        "wait": WAIT_FIELD,
        "n": N_FIELD,
    }
    model = create_model("pix_generateArguments", __base__=_PixGenerateArgsBase, **fields)
    model.styles = dict(styles or {})
    model.extra_caps = ExtraCaps(count=settings.max_extra_arguments, depth=settings.max_extra_depth,
                                 size=settings.max_extra_bytes)
    return model


async def pix_generate(ctx: Context, extra_arguments: dict[str, Any], given_arguments: frozenset[str],
                       prompt: str, negative_prompt: str | None, width: int, height: int, num_steps: int,
                       guidance_scale: float, seed: int, model: str = "sdxl", wait: bool = True,
                       style: Style | None = None, n: int = 1) -> CallToolResult:
    state = state_of(ctx)
    endpoint = CATALOGUE[chosen_model(model, given_arguments, style)]
    values = {"prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
              "num_steps": num_steps, "guidance_scale": guidance_scale, "seed": seed}
    # Only what the caller gave: each model has its own defaults (the schema shows SDXL's).
    given = {name: value for name, value in values.items() if name in given_arguments or name == "prompt"}
    not_applied: list[str] = []
    if style is not None:
        styled = apply_style(style, endpoint, given)
        given, not_applied = styled.values, styled.not_applied
    try:
        request = build_request(state.settings, endpoint, given, extra=extra_arguments,
                                style=style.name if style is not None else None)
    except RequestProblem as exc:  # pragma: no cover - the argument model refuses these first
        raise ToolError(f"Invalid arguments: {exc}. Nothing was recorded or sent to Pixazo.") from None
    if n == 1:
        result = await run_request(ctx, state, request, wait=wait)
    else:
        seeded = "seed" in given  # the caller's seed, or the style's: s, s+1, ...; else random seeds
        requests = variations(request, n, seeded)  # every text-to-image model takes a seed
        result = await run_batch(ctx, state, requests, seeds=seeds_text(requests, seeded), wait=wait)
    if style is not None and not result.is_error:
        not_applied_note(result, style, endpoint.model, not_applied)
    return result


def pix_generate_tool(settings: Settings, styles: Mapping[str, Style] | None = None) -> Tool:
    """Built by hand rather than with the decorator: its schema must allow additional properties."""
    args = pix_generate_arguments(settings, styles)
    return Tool(
        fn=pix_generate,
        name="pix_generate",
        title="Generate an image (Pixazo)",
        description=PIX_GENERATE_DESCRIPTION.format(count=settings.max_extra_arguments,
                                                    size=settings.max_extra_bytes, depth=settings.max_extra_depth),
        parameters=args.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=args, output_model=ImageOut),
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(title="Generate an image", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
    )


