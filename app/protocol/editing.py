"""The editing tools: upscale, remove a background, inpaint, outpaint an image the caller names.

Each takes `image` (and inpainting `mask`) as a generation id, a `pixazo://generations/{id}/image`
URI or an https URL; app.core.inputs turns it into a URL Pixazo can fetch. Arguments are checked
against the model's catalogue entry before the tool runs; input images are resolved before anything
is recorded. Either refusal leaves no row and sends nothing. Results look like pix_generate's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model
from pydantic_core import ErrorDetails

from app.core.costs import Prices, PricesFileError, usd
from app.core.extras import ExtraCaps
from app.core.inputs import FORMS, InputImage, InputProblem
from app.core.requests import RequestProblem, build_request, problems_for, range_text
from app.core.styles import Style, apply_style, prompt_problem
from app.identity.tokens import current_caller
from app.pixazo.gateway import EDITORS, Endpoint
from app.protocol.arguments import CatalogueArgs
from app.protocol.jobs import WAIT_FIELD, run_request
from app.protocol.results import ImageOut, state_of
from app.protocol.styles import not_applied_note, style_field
from app.settings import Settings

IMAGE_HELP = "Generation id (an upload's too), pixazo:// image URI, public https URL, or data: URI."
EXTRAS_HELP = "Extra arguments are recorded (at most {count}), not sent."


class _EditArgsBase(CatalogueArgs):
    """An editing tool's arguments, explained by its model's catalogue entry."""

    endpoint: ClassVar[Endpoint]

    @classmethod
    def _problem_text(cls, field: str, err: ErrorDetails) -> str:
        arg = cls.endpoint.args.get(field)
        if err["type"] == "missing" or arg is None:
            return super()._problem_text(field, err)
        if arg.kind == "image":
            return f"`{field}` must be {FORMS}"
        return f"{range_text(field, arg)} for {cls.endpoint.model}"

    def _model_problems(self) -> list[str]:
        values = {name: getattr(self, name) for name in type(self).model_fields if name not in ("wait", "style")}
        # A ChatGPT file stands for an image like a URL does (it is fetched when the tool runs).
        problems = problems_for(self.endpoint, {name: value.download_url if isinstance(value, FileParam) else value
                                                for name, value in values.items()})
        style = self.chosen_style()
        if style is not None and (problem := prompt_problem(style, self.endpoint, str(values.get("prompt") or ""))):
            problems.append(problem)
        return problems


def _limited(endpoint: Endpoint, name: str, kind: type, description: str | None, default: Any) -> Any:
    """A field with the catalogue's bounds in its schema (checked again, with the model named, above)."""
    limit = endpoint.args[name].limit
    bounds: dict[str, Any] = {}
    if limit is not None:
        if kind is str:
            bounds = {"min_length": int(limit.minimum), "max_length": int(limit.maximum)}
        else:
            low, high = (int(limit.minimum), int(limit.maximum)) if kind is int else (limit.minimum, limit.maximum)
            bounds = {"ge": low, "le": high, "multiple_of": limit.multiple_of}
    optional = kind | None if default is None else kind
    return (Annotated[optional, Field(description=description, **bounds)], ... if default is ... else default)


class FileParam(BaseModel):
    # (No docstring: it would be published in every editing tool's schema.) A file ChatGPT hands a tool for
    # an argument it names in `_meta["openai/fileParams"]`: download_url, and file_id, mime_type and
    # file_name, which are kept as given and not published.
    model_config = ConfigDict(extra="allow")

    download_url: str = Field(max_length=4096)


IMAGE_FIELD: Any = (Annotated[StrictInt | StrictStr | FileParam, Field(description=IMAGE_HELP)], ...)


def _arguments(settings: Settings, operation: str, fields: dict[str, Any],
               styles: Mapping[str, Style] | None = None) -> type[_EditArgsBase]:
    model = create_model(f"pix_{operation}Arguments", __base__=_EditArgsBase, **fields)
    model.endpoint = EDITORS[operation]
    model.styles = dict(styles or {})
    model.extra_caps = ExtraCaps(count=settings.max_extra_arguments, depth=settings.max_extra_depth,
                                 size=settings.max_extra_bytes)
    return model


async def resolve_input(ctx: Context, name: str, value: Any) -> InputImage:
    if isinstance(value, FileParam):
        value = value.model_dump()
    try:
        return await state_of(ctx).inputs.resolve(name, value, current_caller())
    except InputProblem as exc:
        raise ToolError(f"Invalid arguments: {exc}. Nothing was recorded or sent to Pixazo.") from None


async def run_edit(ctx: Context, operation: str, values: dict[str, Any], extra: dict[str, Any],
               images: dict[str, InputImage], label: str, wait: bool, prompt: str | None = None,
               style: str | None = None) -> CallToolResult:
    """Build the checked request (inputs sent as their URLs, recorded as given) and run it."""
    state = state_of(ctx)
    source = images["image"]
    # The row's prompt: the tool's own (inpaint), else the input generation's, so a search for the
    # words of an image finds what was made from it; an https URL input has none.
    row_prompt = prompt if prompt is not None else (source.parent.prompt if source.parent is not None else "")
    given = {**values, **{name: found.given for name, found in images.items()}}
    try:
        request = build_request(state.settings, EDITORS[operation], given, extra=extra,
                                inputs={name: found.url for name, found in images.items()},
                                parent_id=source.parent.id if source.parent is not None else None,
                                prompt=row_prompt, style=style)
    except RequestProblem as exc:  # pragma: no cover - the argument model refuses these first
        raise ToolError(f"Invalid arguments: {exc}. Nothing was recorded or sent to Pixazo.") from None
    return await run_request(ctx, state, request, label, wait)


async def pix_upscale(ctx: Context, extra_arguments: dict[str, Any], image: int | str | FileParam,
                      scale: int = 2, wait: bool = True) -> CallToolResult:
    found = await resolve_input(ctx, "image", image)
    return await run_edit(ctx, "upscale", {"scale": scale}, extra_arguments, {"image": found}, "Upscaled image", wait)


async def pix_remove_background(ctx: Context, extra_arguments: dict[str, Any], image: int | str | FileParam,
                                wait: bool = True) -> CallToolResult:
    found = await resolve_input(ctx, "image", image)
    return await run_edit(ctx, "remove_background", {}, extra_arguments, {"image": found}, "Image without background",
                      wait)


async def pix_inpaint(ctx: Context, extra_arguments: dict[str, Any], image: int | str | FileParam,
                      mask: int | str | FileParam,
                      prompt: str, negative_prompt: str | None = None, width: int | None = None,
                      height: int | None = None, num_steps: int | None = None,
                      guidance_scale: float | None = None, seed: int | None = None,
                      wait: bool = True, style: Style | None = None) -> CallToolResult:
    images = {"image": await resolve_input(ctx, "image", image), "mask": await resolve_input(ctx, "mask", mask)}
    values: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative_prompt, "width": width,
                              "height": height, "num_steps": num_steps, "guidance_scale": guidance_scale, "seed": seed}
    if style is None:
        return await run_edit(ctx, "inpaint", values, extra_arguments, images, "Inpainted image", wait, prompt=prompt)
    # Inpainting has one model: a style's `model` does not apply, its defaults do where that model takes them.
    styled = apply_style(style, EDITORS["inpaint"], values)
    result = await run_edit(ctx, "inpaint", styled.values, extra_arguments, images, "Inpainted image", wait,
                            prompt=styled.values["prompt"], style=style.name)
    return result if result.is_error else not_applied_note(result, style, EDITORS["inpaint"].model,
                                                           styled.not_applied)


async def pix_outpaint(ctx: Context, extra_arguments: dict[str, Any], image: int | str | FileParam,
                       zoom_out_percentage: int = 20, wait: bool = True) -> CallToolResult:
    found = await resolve_input(ctx, "image", image)
    return await run_edit(ctx, "outpaint", {"zoom_out_percentage": zoom_out_percentage}, extra_arguments,
                      {"image": found}, "Outpainted image", wait)


def _price_text(endpoint: Endpoint, prices: Prices) -> str:
    """The price in force (the catalogue's published figure, or the operator's PIXAZO_PRICES_FILE)."""
    rows = [(tier, price) for model, _, tier, price in prices.table() if model == endpoint.model]
    if len(rows) > 1 or (rows and rows[0][0]):
        return "Costs " + ", ".join(f"{usd(price)} at {tier}" for tier, price in rows) + "."
    price = rows[0][1] if rows else None
    if price is None:
        return "Pixazo publishes no price for it: the cost is unknown."
    if price == 0:
        return "Free on Pixazo (price $0)."
    return f"Costs {usd(price)} a call."


SPECS: dict[str, tuple[Any, str, str, str]] = {
    # operation: (function, title, what it does, typical time)
    "upscale": (pix_upscale, "Upscale an image (Pixazo)", "Enlarge an image 2, 4, 6 or 8 times with {title}.",
                "Queued: 10-60 s."),
    "remove_background": (pix_remove_background, "Remove an image's background (Pixazo)",
                          "Cut the subject out: a transparent PNG, by {title}.", "Queued: 5-30 s."),
    "inpaint": (pix_inpaint, "Inpaint part of an image (Pixazo)",
                "Repaint what `mask` marks white to show `prompt`, with {title}.", "10-30 s."),
    "outpaint": (pix_outpaint, "Outpaint an image (Pixazo)",
                 "Zoom out by `zoom_out_percentage` and let {title} paint the new margin.", "Queued: 10-60 s."),
}

def _fields(operation: str, styles: Mapping[str, Style]) -> dict[str, Any]:
    styled = style_field(styles, has_model=False) if operation == "inpaint" else {}
    return {**_model_fields(operation), **styled, "wait": WAIT_FIELD}


def _model_fields(operation: str) -> dict[str, Any]:
    e = EDITORS[operation]
    if operation == "upscale":
        return {"image": IMAGE_FIELD, "scale": (Annotated[Literal[2, 4, 6, 8], Field(
            description="Times larger per side (the price depends on it).")], 2)}
    if operation == "remove_background":
        return {"image": IMAGE_FIELD}
    if operation == "outpaint":
        return {"image": IMAGE_FIELD, "zoom_out_percentage": _limited(
            e, "zoom_out_percentage", int, None, 20)}
    return {
        "image": IMAGE_FIELD,
        "mask": (Annotated[StrictInt | StrictStr | FileParam, Field(description="Like `image`; white is repainted.")],
                 ...),
        "prompt": _limited(e, "prompt", str, "What the masked part should show.", ...),
        "negative_prompt": _limited(e, "negative_prompt", str, None, None),
        "width": _limited(e, "width", int, None, None),
        "height": _limited(e, "height", int, None, None),
        "num_steps": _limited(e, "num_steps", int, None, None),
        "guidance_scale": _limited(e, "guidance_scale", float, None, None),
        "seed": _limited(e, "seed", int, None, None),
    }


def editing_tools(settings: Settings, styles: Mapping[str, Style] | None = None) -> list[Tool]:
    """The four editing tools, built by hand like pix_generate (their schemas allow extra properties)."""
    try:
        prices = Prices.load(settings)
    except PricesFileError:
        prices = Prices()  # the server refuses to start on a bad prices file; its message says why
    tools = []
    for operation, (fn, title, what, timing) in SPECS.items():
        endpoint = EDITORS[operation]
        args = _arguments(settings, operation, _fields(operation, styles or {}), styles)
        description = " ".join([
            what.format(title=endpoint.title), f"{_price_text(endpoint, prices)} {timing}",
            EXTRAS_HELP.format(count=settings.max_extra_arguments),
        ])
        tools.append(Tool(
            fn=fn, name=fn.__name__, title=title, description=description,
            # ChatGPT sends a file the person attached for these (a download link the server fetches).
            meta={"openai/fileParams": ["image", "mask"] if operation == "inpaint" else ["image"]},
            parameters=args.model_json_schema(by_alias=True),
            fn_metadata=FuncMetadata(arg_model=args, output_model=ImageOut),
            is_async=True, context_kwarg="ctx",
            annotations=ToolAnnotations(title=title.removesuffix(" (Pixazo)"), read_only_hint=False,
                                        destructive_hint=False, idempotent_hint=False, open_world_hint=True),
        ))
    return tools
