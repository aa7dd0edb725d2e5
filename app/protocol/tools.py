"""The MCP tools: typed arguments, the docstrings a model reads, and results built for agents."""

from __future__ import annotations

import base64
from typing import Annotated, Any, ClassVar, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, create_model
from pydantic_core import ErrorDetails

from app import __version__
from app.core.extras import ExtraCaps
from app.core.lineage import CHILDREN_SHOWN, lineage
from app.core.requests import GenerationRequest, RequestProblem, build_request, problems_for, range_text
from app.core.service import GenerationService, Outcome
from app.core.state import AppState
from app.errors import NotFoundError
from app.identity.tokens import current_caller
from app.pixazo.gateway import CATALOGUE, GENERATE_MODELS, SDXL_LIMITS
from app.protocol.arguments import CatalogueArgs
from app.protocol.calllog import CALL_INFO
from app.settings import Settings
from app.storage.images import THUMB_MIME
from app.storage.records import MAX_ID, MIN_ID, Generation

PIX_GENERATE_DESCRIPTION = """Generate an image from a text prompt with one of Pixazo's models.

Models (`model`): {models}.
Returns the image URL and the generation's id. Every call is recorded, successful or not. Arguments
the tool does not know are not sent to Pixazo but are kept with the record (use them to tag requests;
at most {count} of them, {size} bytes as JSON in all, nested at most {depth} deep).
A generation usually takes 10-30 seconds."""


class GenerationResult(BaseModel):
    """The structured result of pix_generate (and of every tool that makes an image)."""

    id: int = Field(description="The generation's id.")
    status: str = Field(description="SUCCESS, or DOWNLOAD_FAILED when the image was made but not kept.")
    image_url: str | None = Field(description="Pixazo's URL of the image (its lifetime is unknown).")
    resource_uri: str | None = Field(description="MCP resource with the stored image, when it was kept.")
    prompt: str
    parameters: dict[str, Any] = Field(description="The parameters sent, plus any extra arguments kept.")
    created_at: str = Field(description="When the call was received (UTC, ISO 8601).")
    image_mime: str | None = Field(default=None, description="MIME type of the stored image.")
    image_bytes: int | None = Field(default=None, description="Size of the stored image.")
    error: str | None = Field(default=None, description="Why the image could not be kept, if it was not.")
    model: str = Field(default="sdxl", description="The Pixazo model that made it.")
    operation: str = Field(default="generate", description=(
        "What was done: generate, upscale, remove_background, inpaint or outpaint."))
    parent_id: int | None = Field(default=None, description=(
        "The generation this one was made from (an edit's input, a regeneration's original); null if none."))
    cost_usd: float | None = Field(default=None, description=(
        "What this call cost in US dollars (0: free; null: the model's price is unknown). It counts "
        "against your daily budget, if you have one (pix_status)."))


class GenerationRecord(BaseModel):
    """One recorded generation."""

    id: int
    created_at: str
    prompt: str
    parameters: dict[str, Any]
    image_url: str | None
    status: str
    error: str | None
    http_status: int | None
    duration_ms: int | None
    finished_at: str | None
    resource_uri: str | None
    image_mime: str | None
    image_bytes: int | None
    image_sha256: str | None
    attempts: int | None = Field(default=None, description="Attempts at Pixazo (retries included).")
    caller: str | None = Field(default=None, description="Who asked (the caller's token name; null if anonymous).")
    model: str = Field(default="sdxl", description="The Pixazo model that made it.")
    operation: str = Field(default="generate", description=(
        "What was done: generate, upscale, remove_background, inpaint or outpaint."))
    parent_id: int | None = Field(default=None, description="The generation this one was made from (null if none).")
    cost_usd: float | None = Field(default=None, description=(
        "What the call cost in US dollars (0 when nothing was charged; null when not recorded)."))


class GenerationSummary(BaseModel):
    """Another generation of the same lineage, in short."""

    id: int
    operation: str = Field(description="generate, upscale, remove_background, inpaint or outpaint.")
    model: str
    status: str
    resource_uri: str | None = Field(description="MCP resource with its stored image, when it was kept.")

    @classmethod
    def of(cls, gen: Generation) -> GenerationSummary:
        return cls(id=gen.id, operation=gen.operation, model=gen.model, status=gen.status,
                   resource_uri=gen.resource_uri)


class GenerationDetail(GenerationRecord):
    """One recorded generation with its lineage: what it was made from and what was made from it."""

    parent: GenerationSummary | None = Field(default=None, description=(
        "The generation this one was made from (an edit's input, a regeneration's original); null when "
        "there is none or you may not see it."))
    children: list[GenerationSummary] = Field(default_factory=list, description=(
        f"Generations made from this one (edits, regenerations) that you may see, newest first, at most "
        f"{CHILDREN_SHOWN}."))
    more_children: bool = Field(default=False, description=(
        "Whether there are more children than listed (list_generations cannot filter by parent; the "
        "gallery's page shows the same newest ones)."))


async def generation_detail(service: GenerationService, gen: Generation, viewer: str | None) -> GenerationDetail:
    """A generation as get_generation and the pixazo://generations/{id} resource show it."""
    found = await lineage(service, gen, viewer)
    return GenerationDetail.model_validate({
        **gen.public(), "parent": GenerationSummary.of(found.parent) if found.parent is not None else None,
        "children": [GenerationSummary.of(child) for child in found.children],
        "more_children": found.more_children,
    })


class GenerationPage(BaseModel):
    """A page of generations, newest first."""

    generations: list[GenerationRecord]
    next_before_id: int | None = Field(description="Pass as before_id for the next page; null at the end.")


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
        chosen = getattr(self, "model", None)
        if not isinstance(chosen, str) or chosen not in CATALOGUE:
            return []
        return problems_for(CATALOGUE[chosen], {name: getattr(self, name) for name in self.given() - {"model"}})


def _unadvertised_default(schema: dict[str, Any]) -> None:
    """The default differs by model: a client that fills in advertised defaults would send SDXL's to FLUX."""
    schema.pop("default", None)


def _int_field(name: str, default: int, description: str, *, per_model: bool = False) -> Any:
    lim = SDXL_LIMITS[name]
    return (Annotated[int, Field(ge=int(lim.minimum), le=int(lim.maximum), multiple_of=lim.multiple_of,
                                 description=description,
                                 json_schema_extra=_unadvertised_default if per_model else None)], default)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _model_text() -> str:
    return "The model: " + "; ".join(f"`{m}` ({CATALOGUE[m].title})" for m in GENERATE_MODELS) + "."


def pix_generate_arguments(settings: Settings) -> type[ArgModelBase]:
    """The input model, with bounds from the model's limit table and defaults from the settings."""
    p, n, g = SDXL_LIMITS["prompt"], SDXL_LIMITS["negative_prompt"], SDXL_LIMITS["guidance_scale"]
    fields: dict[str, Any] = {
        "prompt": (Annotated[str, Field(min_length=int(p.minimum), max_length=int(p.maximum),
                                        description="What the image should show.")], ...),
        "negative_prompt": (Annotated[str | None, Field(max_length=int(n.maximum), description=(
            "What the image should not show (not taken by flux-schnell)."))], None),
        "width": _int_field("width", settings.default_width, "Image width in pixels (flux-schnell: at most 1024)."),
        "height": _int_field("height", settings.default_height,
                             "Image height in pixels (flux-schnell: at most 1024)."),
        "num_steps": _int_field("num_steps", settings.default_num_steps, (
            f"Diffusion steps; more is slower (default {settings.default_num_steps}; flux-schnell: 1-8, "
            "default 4)."), per_model=True),
        "guidance_scale": (Annotated[float, Field(ge=g.minimum, le=g.maximum, description=(
            f"How closely to follow the prompt (default {_num(settings.default_guidance_scale)}; not taken by "
            "flux-schnell)."), json_schema_extra=_unadvertised_default)], settings.default_guidance_scale),
        "seed": _int_field("seed", settings.default_seed, "Random seed; the same seed repeats an image."),
        "model": (Literal[GENERATE_MODELS], Field(
            default="sdxl", description=_model_text())),
    }
    model = create_model("pix_generateArguments", __base__=_PixGenerateArgsBase, **fields)
    model.extra_caps = ExtraCaps(count=settings.max_extra_arguments, depth=settings.max_extra_depth,
                                 size=settings.max_extra_bytes)
    return model


def state_of(ctx: Context) -> AppState:
    state = ctx.request_context.lifespan_context
    if not isinstance(state, AppState):  # pragma: no cover - the lifespan always yields one
        raise TypeError("the server's lifespan did not provide an AppState")
    return state


def _shape(params: dict[str, Any]) -> str:
    """The arguments worth repeating in the text result, those the call had (an upscale has no seed)."""
    parts = []
    if params.get("width") is not None and params.get("height") is not None:
        parts.append(f"{params['width']}x{params['height']}")
    for name, label in (("seed", "seed {}"), ("num_steps", "{} steps"), ("scale", "scale {}"),
                        ("zoom_out_percentage", "zoomed out {}%")):
        if params.get(name) is not None:
            parts.append(label.format(params[name]))
    return f"({', '.join(parts)})" if parts else ""


async def generation_result(outcome: Outcome, state: AppState, label: str = "Generated image") -> CallToolResult:
    gen = outcome.generation
    if not outcome.ok:
        text = f"Generation {gen.id} failed ({gen.status}). {outcome.error_message}"
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    structured = GenerationResult(
        id=gen.id, status=gen.status, image_url=gen.image_url, resource_uri=gen.resource_uri,
        prompt=gen.prompt, parameters=gen.parameters, created_at=gen.timestamp, image_mime=gen.image_mime,
        image_bytes=gen.image_bytes, error=gen.error if outcome.download_problem else None,
        model=gen.model, operation=gen.operation, parent_id=gen.parent_id, cost_usd=gen.cost_usd,
    ).model_dump(mode="json")
    shape = _shape(gen.parameters)
    content: list[ContentBlock] = []
    if outcome.download_problem:
        content.append(TextContent(type="text", text=(
            f"{label} {gen.id}: {gen.image_url} {shape}\n"
            f"The server could not keep a copy ({outcome.download_problem}); the URL above is Pixazo's "
            "and may expire, so download it soon if you need it.")))
        return CallToolResult(content=content, structured_content=structured)
    content.append(TextContent(type="text", text=(
        f"{label} {gen.id}: {gen.image_url} {shape}\nStored copy: {gen.resource_uri}")))
    if gen.resource_uri is None or gen.image_path is None:  # pragma: no cover - a SUCCESS row keeps its image
        return CallToolResult(content=content, structured_content=structured)
    content.append(ResourceLink(type="resource_link", uri=gen.resource_uri, name=f"generation-{gen.id}",
                                title=gen.prompt[:80], mime_type=gen.image_mime, size=gen.image_bytes))
    if state.settings.inline_image != "none":
        if state.settings.inline_image == "thumbnail":
            data = outcome.thumbnail or await state.service.images.thumbnail(gen.image_path)
            mime = THUMB_MIME
        else:
            data, mime = await state.service.images.read(gen.image_path), gen.image_mime or "image/png"
        content.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime))
    return CallToolResult(content=content, structured_content=structured)


async def pix_generate(ctx: Context, extra_arguments: dict[str, Any], given_arguments: frozenset[str],
                       prompt: str, negative_prompt: str | None, width: int, height: int, num_steps: int,
                       guidance_scale: float, seed: int, model: str = "sdxl") -> CallToolResult:
    state = state_of(ctx)
    values = {"prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
              "num_steps": num_steps, "guidance_scale": guidance_scale, "seed": seed}
    # Only what the caller gave: each model has its own defaults (the schema shows SDXL's).
    given = {name: value for name, value in values.items() if name in given_arguments or name == "prompt"}
    try:
        request = build_request(state.settings, CATALOGUE[model], given, extra=extra_arguments)
    except RequestProblem as exc:  # pragma: no cover - the argument model refuses these first
        raise ToolError(f"Invalid arguments: {exc}. Nothing was recorded or sent to Pixazo.") from None
    return await run_request(ctx, state, request)


async def run_request(ctx: Context, state: AppState, request: GenerationRequest,
                      label: str = "Generated image") -> CallToolResult:
    """Run one checked request for the calling agent, with progress when it asked for it."""
    service = state.service
    if not _wants_progress(ctx):
        outcome = await service.generate(request, current_caller())
    else:
        progress = _Progress(ctx, state.settings.progress_interval_s)
        async with anyio.create_task_group() as tg:
            await progress.report("Generating with Pixazo")
            tg.start_soon(progress.heartbeat)
            outcome = await service.generate(request, current_caller(), on_job=progress.job)
            tg.cancel_scope.cancel()
        await progress.report(f"Finished: {outcome.generation.status}")
    if (info := CALL_INFO.get()) is not None:
        info.status, info.attempts = outcome.generation.status, outcome.generation.attempts
        info.generation_id = outcome.generation.id
    return await generation_result(outcome, state, label)


def _wants_progress(ctx: Context) -> bool:
    """Whether the caller sent a progress token (without one, no heartbeat task is worth starting)."""
    meta: Any = ctx.request_context.meta
    return bool(meta) and (meta.get("progress_token") is not None or meta.get("progressToken") is not None)


class _Progress:
    """MCP progress for a long call: a start, a heartbeat (keeps proxies from closing the stream), an end.

    For a queue model, every change of the job's state is reported at once ("Pixazo job abc: QUEUED"),
    and the heartbeat repeats the state with the time waited ("Pixazo job abc: PROCESSING (12 s)").
    Progress values only grow, as the spec asks; there is no total because Pixazo gives no estimate.
    Only built when the client sent a progress token (without one the SDK would drop the reports).
    """

    def __init__(self, ctx: Context, interval: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._step = 0
        self._started = anyio.current_time()
        self._job: tuple[str, str] | None = None  # (request id, state) of the call's queue job

    async def report(self, message: str) -> None:
        self._step += 1
        await self._ctx.report_progress(self._step, None, message)

    def _waited(self) -> int:
        return round(anyio.current_time() - self._started)

    async def job(self, request_id: str, state: str) -> None:
        """The service's JobWatcher: a new state is reported now; the same one waits for the heartbeat."""
        if self._job == (request_id, state):
            return
        first = self._job is None
        self._job = (request_id, state)
        await self.report(f"Pixazo job {request_id}: {state}" if first else
                          f"Pixazo job {request_id}: {state} ({self._waited()} s)")

    async def heartbeat(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            if self._job is None:
                await self.report(f"Still waiting for Pixazo ({self._waited()} s)")
            else:
                request_id, state = self._job
                await self.report(f"Pixazo job {request_id}: {state} ({self._waited()} s)")


def pix_generate_tool(settings: Settings) -> Tool:
    """Built by hand rather than with the decorator: its schema must allow additional properties."""
    args = pix_generate_arguments(settings)
    return Tool(
        fn=pix_generate,
        name="pix_generate",
        title="Generate an image (Pixazo)",
        description=PIX_GENERATE_DESCRIPTION.format(models=", ".join(GENERATE_MODELS),
                                                    count=settings.max_extra_arguments,
                                                    size=settings.max_extra_bytes, depth=settings.max_extra_depth),
        parameters=args.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=args, output_model=GenerationResult),
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(title="Generate an image", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
    )


async def list_generations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=100, description="How many to return.")] = 20,
    status: Annotated[str | None, Field(max_length=40, description="Only this status, e.g. SUCCESS or HTTP_429.")
                      ] = None,
    query: Annotated[str | None, Field(max_length=500, description="Words the prompt must contain.")] = None,
    before_id: Annotated[int | None, Field(ge=MIN_ID, le=MAX_ID, description="Only ids below this (for paging).")
                         ] = None,
    caller: Annotated[str | None, Field(max_length=64, description="Only this caller's generations.")] = None,
) -> GenerationPage:
    """List recorded generations, newest first, optionally filtered by status, caller or prompt words."""
    service = state_of(ctx).service
    found = await service.page(current_caller(), limit=limit, status=status, query=query, before_id=before_id,
                               caller=caller)
    records = [GenerationRecord.model_validate(g.public()) for g in found]
    return GenerationPage(generations=records,
                          next_before_id=records[-1].id if len(records) == limit else None)


async def get_generation(ctx: Context,
                         id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID, description="The generation's id.")],
                         ) -> GenerationDetail:
    """Get one recorded generation by id: prompt, parameters, status, URLs, the stored image's details,
    its model and operation, the generation it was made from (`parent`) and those made from it
    (`children`, newest first)."""
    service, viewer = state_of(ctx).service, current_caller()
    try:
        gen = await service.get(id, viewer)
    except NotFoundError as exc:
        raise ToolError(str(exc)) from None
    return await generation_detail(service, gen, viewer)


class LimitState(BaseModel):
    limit: int
    remaining: int
    resets_in_s: float


class StatusResult(BaseModel):
    """What the server can tell a caller about itself and the caller's allowance."""

    caller: str | None = Field(description="Your caller name (null when the server runs without tokens).")
    per_minute: LimitState | None = Field(description="Your per-minute allowance; null when unlimited.")
    daily: LimitState | None = Field(description="Your allowance for this UTC day; null when unlimited.")
    spent_today_usd: float = Field(description=(
        "What your calls cost this UTC day, in US dollars (calls in flight count at their price)."))
    daily_budget_usd: float | None = Field(description=(
        "What you may spend per UTC day, in US dollars; null when there is no budget. A call that would "
        "pass it is refused (BUDGET_EXCEEDED) with nothing sent; it resets at midnight UTC."))
    budget_remaining_usd: float | None = Field(description=(
        "What is left of your budget today, in US dollars; null when there is no budget."))
    breaker: str = Field(description="closed (normal), open (Pixazo failing, calls paused) or half_open.")
    breaker_retry_in_s: float = Field(description="Seconds until calls are tried again, when open.")
    api_key_configured: bool = Field(description="Whether the server has a Pixazo key.")
    calls_in_flight: int
    calls_queued: int
    version: str


async def pix_status(ctx: Context) -> StatusResult:
    """Your remaining limits, your spend today and what is left of your budget, whether Pixazo is
    reachable (the circuit breaker) and whether the server has a Pixazo key. Cheap: call it before a
    batch of generations."""
    service = state_of(ctx).service
    caller = current_caller()
    remaining = await service.limits.remaining(caller)
    spend = await service.limits.spend(caller)
    minute, daily = remaining.get("per_minute"), remaining.get("daily")
    return StatusResult(
        caller=caller,
        per_minute=LimitState.model_validate(minute) if minute else None,
        daily=LimitState.model_validate(daily) if daily else None,
        spent_today_usd=spend.spent_usd, daily_budget_usd=spend.budget_usd, budget_remaining_usd=spend.remaining_usd,
        breaker=service.breaker.state, breaker_retry_in_s=round(service.breaker.retry_in(), 1),
        api_key_configured=service.client.has_key, calls_in_flight=service.cap.in_flight,
        calls_queued=service.cap.waiting, version=__version__,
    )


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


def all_tools(settings: Settings) -> list[Tool]:
    # Imported here: the editing tools and pix_regenerate build on this module's results and runner.
    from app.protocol.editing import editing_tools
    from app.protocol.lineage import pix_regenerate_tool

    return [
        pix_generate_tool(settings),
        *editing_tools(settings),
        pix_regenerate_tool(),
        Tool.from_function(list_generations, title="List generations",
                           annotations=READ_ONLY.model_copy(update={"title": "List generations"})),
        Tool.from_function(get_generation, title="Get a generation",
                           annotations=READ_ONLY.model_copy(update={"title": "Get a generation"})),
        Tool.from_function(pix_status, title="Server and quota status",
                           annotations=READ_ONLY.model_copy(update={"title": "Server and quota status"})),
    ]
