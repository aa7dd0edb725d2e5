"""The MCP tools: typed arguments, the docstrings a model reads, and results built for agents."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from app.pixazo import SDXL_LIMITS, Limit
from app.service import Outcome
from app.settings import Settings
from app.state import AppState

EXTRA_KWARG = "extra_arguments"

PIX_GENERATE_DESCRIPTION = """Generate an image from a text prompt with Pixazo's Stable Diffusion XL model.

Returns the image URL and the generation's id. Every call is recorded, successful or not. Arguments
the tool does not know are not sent to Pixazo but are kept with the record (use them to tag requests).
A generation usually takes 10-30 seconds."""


class GenerationResult(BaseModel):
    """The structured result of pix_generate."""

    id: int = Field(description="The generation's id.")
    status: str = Field(description="SUCCESS, or why it failed.")
    image_url: str | None = Field(description="Pixazo's URL of the image.")
    prompt: str
    parameters: dict[str, Any] = Field(description="The parameters sent, plus any extra arguments kept.")
    created_at: str = Field(description="When the call was received (UTC, ISO 8601).")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range_text(name: str, limit: Limit) -> str:
    low, high = _num(limit.minimum), _num(limit.maximum)
    if name in ("prompt", "negative_prompt"):
        return f"`{name}` must be a string of {low} to {high} characters"
    kind = "a number" if name == "guidance_scale" else "an integer"
    step = f", a multiple of {limit.multiple_of}" if limit.multiple_of else ""
    return f"`{name}` must be {kind} from {low} to {high}{step}"


class _PixGenerateArgsBase(ArgModelBase):
    """Keeps unknown arguments (teams tag requests with them) and explains bad ones by their range."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True, hide_input_in_errors=True)

    @model_validator(mode="wrap")
    @classmethod
    def _explain(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            problems: list[str] = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                if field in SDXL_LIMITS:
                    text = _range_text(field, SDXL_LIMITS[field])
                elif err["type"] == "missing":
                    text = f"`{field}` is required"
                else:
                    text = f"`{field}`: {err['msg']}"
                if text not in problems:
                    problems.append(text)
            raise PydanticCustomError(
                "invalid_arguments", "Invalid arguments: {problems}. Nothing was sent to Pixazo.",
                {"problems": "; ".join(problems)},
            ) from None

    def model_dump_one_level(self) -> dict[str, Any]:
        kwargs = super().model_dump_one_level()
        kwargs[EXTRA_KWARG] = dict(self.model_extra or {})
        return kwargs


def _int_field(name: str, default: int, description: str) -> Any:
    lim = SDXL_LIMITS[name]
    return (Annotated[int, Field(ge=int(lim.minimum), le=int(lim.maximum), multiple_of=lim.multiple_of,
                                 description=description)], default)


def pix_generate_arguments(settings: Settings) -> type[ArgModelBase]:
    """The input model, with bounds from the model's limit table and defaults from the settings."""
    p, n, g = SDXL_LIMITS["prompt"], SDXL_LIMITS["negative_prompt"], SDXL_LIMITS["guidance_scale"]
    fields: dict[str, Any] = {
        "prompt": (Annotated[str, Field(min_length=int(p.minimum), max_length=int(p.maximum),
                                        description="What the image should show.")], ...),
        "negative_prompt": (Annotated[str | None, Field(max_length=int(n.maximum),
                                                        description="What the image should not show.")],
                            None),
        "width": _int_field("width", settings.default_width, "Image width in pixels."),
        "height": _int_field("height", settings.default_height, "Image height in pixels."),
        "num_steps": _int_field("num_steps", settings.default_num_steps, "Diffusion steps; more is slower."),
        "guidance_scale": (Annotated[float, Field(ge=g.minimum, le=g.maximum,
                                                  description="How closely to follow the prompt.")],
                           settings.default_guidance_scale),
        "seed": _int_field("seed", settings.default_seed, "Random seed; the same seed repeats an image."),
    }
    model: type[ArgModelBase] = create_model("pix_generateArguments", __base__=_PixGenerateArgsBase, **fields)
    return model


def _state(ctx: Context) -> AppState:
    state = ctx.request_context.lifespan_context
    if not isinstance(state, AppState):  # pragma: no cover - the lifespan always yields one
        raise TypeError("the server's lifespan did not provide an AppState")
    return state


def generation_result(outcome: Outcome) -> CallToolResult:
    gen = outcome.generation
    if not outcome.ok:
        text = f"Generation {gen.id} failed ({gen.status}). {outcome.error_message}"
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    structured = GenerationResult(
        id=gen.id, status=gen.status, image_url=gen.image_url, prompt=gen.prompt,
        parameters=gen.parameters, created_at=gen.timestamp,
    ).model_dump(mode="json")
    params = gen.parameters
    text = (f"Generated image {gen.id}: {gen.image_url}\n"
            f"({params.get('width')}x{params.get('height')}, seed {params.get('seed')}, "
            f"{params.get('num_steps')} steps)")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def pix_generate(ctx: Context, extra_arguments: dict[str, Any], prompt: str,
                       negative_prompt: str | None, width: int, height: int, num_steps: int,
                       guidance_scale: float, seed: int) -> CallToolResult:
    service = _state(ctx).service
    request = service.build_request(
        prompt, negative_prompt=negative_prompt, width=width, height=height, num_steps=num_steps,
        guidance_scale=guidance_scale, seed=seed, extra=extra_arguments,
    )
    return generation_result(await service.generate(request))


def pix_generate_tool(settings: Settings) -> Tool:
    """Built by hand rather than with the decorator: its schema must allow additional properties."""
    args = pix_generate_arguments(settings)
    return Tool(
        fn=pix_generate,
        name="pix_generate",
        title="Generate an image (Pixazo SDXL)",
        description=PIX_GENERATE_DESCRIPTION,
        parameters=args.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=args, output_model=GenerationResult),
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(title="Generate an image", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
    )


def all_tools(settings: Settings) -> list[Tool]:
    return [pix_generate_tool(settings)]
