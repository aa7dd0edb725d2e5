"""pix_regenerate: repeat a recorded generation with some arguments changed (app.core.lineage builds the
request; the result is pix_generate's). get_generation's parent and children are in app.protocol.history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from app.core.batches import seeds_text, variations
from app.core.inputs import InputProblem
from app.core.lineage import OVERRIDABLE, RepeatProblem, repeat_request
from app.core.requests import RequestProblem
from app.errors import NotFoundError
from app.identity.tokens import current_caller
from app.pixazo.gateway import GENERATE_MODELS, WIDEST
from app.protocol.batches import run_batch
from app.protocol.jobs import N_FIELD, WAIT_FIELD, run_request
from app.protocol.results import ImageOut, state_of
from app.storage.records import MAX_ID, MIN_ID

NOTHING_DONE = "Nothing was recorded or sent to Pixazo."
ARGUMENTS = ("id", *OVERRIDABLE, "model", "wait", "n")

PIX_REGENERATE_DESCRIPTION = """Repeat generation `id`, changing the arguments given (`model`: another \
text-to-image model); parent_id is `id`."""


class _RegenerateArgsBase(ArgModelBase):
    """Refuses unknown arguments (there is nowhere sensible to keep them) and explains bad ones."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, hide_input_in_errors=True)

    @model_validator(mode="wrap")
    @classmethod
    def _explain(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            problems: list[str] = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                if err["type"] == "extra_forbidden":
                    text = f"pix_regenerate takes no `{field}` (it takes {', '.join(ARGUMENTS)})"
                elif err["type"] == "missing":
                    text = f"`{field}` is required"
                elif field == "model":
                    text = f"`model` must be one of {', '.join(GENERATE_MODELS)}"
                else:
                    text = f"`{field}`: {err['msg']}"
                if text not in problems:
                    problems.append(text)
            raise PydanticCustomError("invalid_arguments", "Invalid arguments: {problems}. " + NOTHING_DONE,
                                      {"problems": "; ".join(problems)}) from None


def _fields(bounded: bool) -> dict[str, Any]:
    """The arguments; `bounded` adds the widest range any model takes (for the advertised schema only:
    the row's own model checks each value, and its refusal names that model and its range)."""
    def bounds(name: str, kind: type) -> dict[str, Any]:
        if not bounded:
            return {}
        lim = WIDEST[name]
        if kind is str:
            # A minimum length of 0 says nothing (tools/list is paid for in every conversation).
            return {"min_length": int(lim.minimum) or None, "max_length": int(lim.maximum)}
        if kind is int:
            return {"ge": int(lim.minimum), "le": int(lim.maximum), "multiple_of": lim.multiple_of}
        return {"ge": lim.minimum, "le": lim.maximum}

    def optional(name: str, kind: type, description: str | None) -> Any:
        return (Annotated[kind | None, Field(description=description, **bounds(name, kind))], None)

    return {
        "id": (Annotated[int, Field(ge=MIN_ID, le=MAX_ID)], ...),
        "prompt": optional("prompt", str, None),
        "negative_prompt": optional("negative_prompt", str, None),
        "width": optional("width", int, None),
        "height": optional("height", int, None),
        "num_steps": optional("num_steps", int, None),
        "guidance_scale": optional("guidance_scale", float, None),
        "seed": optional("seed", int, None),
        "model": (Annotated[Literal[GENERATE_MODELS] | None, Field()], None),
        "wait": WAIT_FIELD,
        "n": N_FIELD,
    }


def pix_regenerate_arguments() -> tuple[type[ArgModelBase], dict[str, Any]]:
    """The input model (types only) and the advertised JSON schema (with the widest ranges)."""
    args = create_model("pix_regenerateArguments", __base__=_RegenerateArgsBase, **_fields(False))
    shown = create_model("pix_regenerateArguments", __base__=_RegenerateArgsBase, **_fields(True))
    return args, shown.model_json_schema(by_alias=True)


async def pix_regenerate(ctx: Context, id: int, prompt: str | None = None, negative_prompt: str | None = None,
                         width: int | None = None, height: int | None = None, num_steps: int | None = None,
                         guidance_scale: float | None = None, seed: int | None = None,
                         model: str | None = None, wait: bool = True, n: int = 1) -> CallToolResult:
    state, viewer = state_of(ctx), current_caller()
    try:
        source = await state.service.get(id, viewer)
    except NotFoundError as exc:
        raise ToolError(f"{exc} {NOTHING_DONE}") from None
    overrides = {"prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
                 "num_steps": num_steps, "guidance_scale": guidance_scale, "seed": seed}

    async def resolve(name: str, value: Any) -> str:
        """An edit's input image, resolved again now (a stale Pixazo URL becomes a signed link)."""
        try:
            return (await state.inputs.resolve(name, value, viewer)).url
        except InputProblem as exc:
            raise RepeatProblem(str(exc)) from None

    try:
        repeat = await repeat_request(state.settings, source, overrides, model=model, resolve=resolve)
        requests = variations(repeat.request, n, seed is not None)
    except (RepeatProblem, RequestProblem) as exc:
        raise ToolError(f"Cannot repeat generation {id}: {exc}. {NOTHING_DONE}") from None
    if n == 1:
        result = await run_request(ctx, state, repeat.request, "Regenerated image", wait)
    else:
        result = await run_batch(ctx, state, requests, seeds=seeds_text(requests, seed is not None),
                                 label="Regenerated image", wait=wait)
    if repeat.not_carried:
        result.content.append(TextContent(type="text", text=(
            f"Not carried over to {repeat.request.model} from generation {id}: "
            f"{', '.join(repeat.not_carried)} (its defaults applied).")))
    return result


def pix_regenerate_tool() -> Tool:
    """Built by hand like pix_generate: its schema shows ranges its input model leaves to the row's model."""
    args, schema = pix_regenerate_arguments()
    return Tool(
        fn=pix_regenerate, name="pix_regenerate", title="Repeat a generation (Pixazo)",
        description=PIX_REGENERATE_DESCRIPTION, parameters=schema,
        fn_metadata=FuncMetadata(arg_model=args, output_model=ImageOut),
        is_async=True, context_kwarg="ctx",
        annotations=ToolAnnotations(title="Repeat a generation", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
    )
