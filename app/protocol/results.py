"""What the image tools answer: the structured result, the text, the resource link and the inline
thumbnail; the record and detail models of the history tools."""

from __future__ import annotations

import base64
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, ConfigDict, Field

from app.core.lineage import CHILDREN_SHOWN, lineage
from app.core.service import DOWNLOAD_FAILED, SUCCESS, GenerationService, Outcome
from app.core.state import AppState
from app.core.uploads import UPLOAD
from app.errors import NotFoundError
from app.identity.tokens import current_caller
from app.storage.records import PENDING, Generation
from app.storage.renditions import THUMB_MIME


class GenerationResult(BaseModel):
    """The structured result of pix_generate (and of every tool that makes an image)."""

    id: int = Field(description="The generation's id.")
    status: str = Field(description=(
        "SUCCESS; DOWNLOAD_FAILED when the image was made but not kept; PENDING when it is still being made "
        "(collect it with pix_wait and this id)."))
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
    style: str | None = Field(default=None, description=(
        "The team style applied (the prompt is then the style's expanded prompt, as sent); null if none."))
    activity: str | None = Field(default=None, description="While PENDING: what the call is doing now.")
    elapsed_s: int | None = Field(default=None, description="While PENDING: seconds since the call was received.")
    batch_id: str | None = Field(default=None, description="Shared by the images of one call with `n` > 1.")


class ImageOut(BaseModel):
    # The output schema the image tools publish (no docstring: it would be published too): the fields an
    # agent reads. The result carries more: image_url, prompt, parameters, model, operation, parent_id, cost_usd,
    # created_at, image_mime, image_bytes, error, activity and elapsed_s while PENDING.

    model_config = ConfigDict(extra="allow")

    id: int
    status: str
    resource_uri: str | None = None


class DetailOut(BaseModel):
    # get_generation's published schema: the record's fields (GenerationRecord), its parent and children.

    model_config = ConfigDict(extra="allow")

    id: int
    status: str
    parent_id: int | None = None
    parent: dict[str, Any] | None = None
    children: list[dict[str, Any]] = Field(default_factory=list)


class PageOut(BaseModel):
    # list_generations' published schema: records like get_generation's, newest first.

    generations: list[dict[str, Any]]
    next_before_id: int | None = None


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
    style: str | None = Field(default=None, description="The team style it was made in (null if none).")
    batch_id: str | None = Field(default=None, description="Shared by the images of one call with `n` > 1.")


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
        model=gen.model, operation=gen.operation, parent_id=gen.parent_id, cost_usd=gen.cost_usd, style=gen.style,
        batch_id=gen.batch_id,
    ).model_dump(mode="json")
    shape = _shape(gen.parameters)
    content: list[ContentBlock] = []
    if outcome.download_problem:
        content.append(TextContent(type="text", text=(
            f"{label} {gen.id}: {gen.image_url} {shape}\n"
            f"The server could not keep a copy ({outcome.download_problem}); the URL above is Pixazo's "
            "and may expire, so download it soon if you need it.")))
        return CallToolResult(content=content, structured_content=structured)
    where = f"{gen.image_url} " if gen.image_url else ""  # an upload has no Pixazo URL, only our copy
    content.append(TextContent(type="text", text=(
        f"{label} {gen.id}: {where}{shape}".rstrip() + f"\nStored copy: {gen.resource_uri}")))
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




# What each operation's result calls its image (pix_wait answers as the original call did).
LABELS = {"generate": "Generated image", "upscale": "Upscaled image", "remove_background": "Image without background",
          "inpaint": "Inpainted image", "outpaint": "Outpainted image", UPLOAD: "Uploaded image"}


def label_for(gen: Generation) -> str:
    if gen.operation == "generate" and gen.parent_id is not None:
        return "Regenerated image"
    return LABELS.get(gen.operation, "Image")


def outcome_of(gen: Generation) -> Outcome:
    """A finished row as the Outcome its call had: the caller's message is the row's `error`."""
    if gen.status == SUCCESS:
        return Outcome(gen)
    if gen.status == DOWNLOAD_FAILED:
        return Outcome(gen, download_problem=gen.error or "the image could not be kept")
    return Outcome(gen, gen.error or f"The call ended {gen.status}.")


def pending_result(gen: Generation, activity: str, elapsed_s: int, wait_s: float) -> CallToolResult:
    """The answer of a call that goes on without its client: not an error, the id and what to do next."""
    structured = GenerationResult(
        id=gen.id, status=PENDING, image_url=None, resource_uri=None, prompt=gen.prompt,
        parameters=gen.parameters, created_at=gen.timestamp, model=gen.model, operation=gen.operation,
        parent_id=gen.parent_id, cost_usd=gen.cost_usd, style=gen.style, activity=activity, elapsed_s=elapsed_s,
        batch_id=gen.batch_id,
    ).model_dump(mode="json")
    if gen.operation == UPLOAD:  # a link waiting for the person's file: nothing runs, nothing is paid
        text = (f"Generation {gen.id} is an upload link not used yet ({elapsed_s} s since it was made): the "
                f"image arrives when the person uploads it. Call pix_wait with id {gen.id} again later; "
                f"pix_cancel with id {gen.id} revokes the link.")
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
    text = (f"Generation {gen.id} is still running ({activity}; {elapsed_s} s so far). It goes on without "
            f"waiting for you and is recorded either way. Call pix_wait with id {gen.id} to get the image "
            f"(each call waits up to {wait_s:g} s); do not call this tool again for it, which would make and "
            f"pay for another image. pix_cancel with id {gen.id} stops it.")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def visible(ctx: Context, gen_id: int, refusal_suffix: str = "") -> Generation:
    """The generation the calling caller may see (PIXAZO_HISTORY_VISIBILITY), or a ToolError that reads
    like a missing one."""
    try:
        return await state_of(ctx).service.get(gen_id, current_caller())
    except NotFoundError as exc:
        raise ToolError(f"{exc}{refusal_suffix}") from None
