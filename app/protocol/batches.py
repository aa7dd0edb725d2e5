"""Variations (`n` > 1 on pix_generate and pix_regenerate): the batch is admitted whole or not at all,
its images run concurrently in the background like any call, and the answer lists every image (a
resource link each, or why it failed, or its id while it still runs) with one inline contact sheet.

Each image is its own row (pix_wait, pix_cancel and get_generation take its id as for any call); the
rows share a `batch_id`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel

from app.core.background import Running
from app.core.batches import new_batch_id
from app.core.requests import GenerationRequest
from app.core.service import DOWNLOAD_FAILED, Outcome
from app.core.state import AppState
from app.identity.tokens import current_caller
from app.protocol.jobs import log_call, wants_progress
from app.protocol.results import GenerationResult, outcome_of
from app.storage.records import PENDING, Generation
from app.storage.renditions import THUMB_MIME
from app.storage.sheets import make_contact_sheet

SUCCESS_ALL, PARTIAL, FAILED = "SUCCESS", "PARTIAL", "FAILED"


class BatchResult(BaseModel):
    """A batch's structuredContent: the first image's id and link (the fields every image tool's output
    schema has), the batch's status, and each image as a single call's result would show it."""

    id: int
    status: str  # SUCCESS (every image made), PARTIAL, FAILED (none made), PENDING (some still running)
    resource_uri: str | None
    batch_id: str
    images: list[dict[str, Any]]


async def run_batch(ctx: Context, state: AppState, requests: list[GenerationRequest], *, seeds: str,
                    label: str = "Generated image", wait: bool = True) -> CallToolResult:
    """Admit the variations of one call (all or none), run them concurrently, and answer within the bound."""
    batch_id = new_batch_id()
    made, refusal = await state.service.admit_batch(requests, current_caller(), batch_id)
    log_call(made[0])
    if refusal is not None:
        text = (f"Generations {_ids(made)} (batch {batch_id}) were refused ({made[0].status}): {refusal}")
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    assert state.background is not None  # noqa: S101 - the lifespan always makes one
    running = [state.background.launch(gen, request) for gen, request in zip(made, requests, strict=True)]
    if wait:
        await _follow_all(ctx, state, running, batch_id)
    return await batch_result(state, running, batch_id, seeds=seeds, label=label)


def _ids(gens: list[Generation]) -> str:
    return ", ".join(str(gen.id) for gen in gens)


async def _follow_all(ctx: Context, state: AppState, running: list[Running], batch_id: str) -> None:
    """Wait up to PIXAZO_ANSWER_WITHIN_S for every image, with one progress stream for the batch. A
    client that cancels before the answer cancels every image (each row ends CANCELLED)."""
    tasks = {r.task for r in running}
    name = f"Generations {_ids([r.generation for r in running])} (batch {batch_id})"
    try:
        async with anyio.create_task_group() as tg:
            if wants_progress(ctx):
                tg.start_soon(_heartbeat, ctx, state.settings.progress_interval_s, name, tasks)
            try:
                await asyncio.wait(tasks, timeout=state.settings.answer_within_s)
            finally:
                tg.cancel_scope.cancel()
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait(tasks)
        raise


async def _heartbeat(ctx: Context, interval: float, name: str, tasks: set[asyncio.Task[Outcome]]) -> None:
    step = 0
    started = anyio.current_time()
    while True:
        step += 1
        done = sum(1 for task in tasks if task.done())
        await ctx.report_progress(step, None, f"{name}: {done} of {len(tasks)} finished "
                                              f"({round(anyio.current_time() - started)} s)")
        await anyio.sleep(interval)


async def _ended(state: AppState, running: Running) -> tuple[Generation, Outcome | None]:
    """An image's row now and, once it ended, its outcome (None while it still runs)."""
    task = running.task
    if task.done() and not task.cancelled():
        outcome = task.result()
        return outcome.generation, outcome
    gen = await state.service.store.get(running.generation.id) or running.generation
    return gen, None if gen.status == PENDING else outcome_of(gen)


def _structured(gen: Generation, outcome: Outcome | None, running: Running) -> dict[str, Any]:
    pending = outcome is None
    return GenerationResult(
        id=gen.id, status=gen.status, image_url=gen.image_url, resource_uri=gen.resource_uri, prompt=gen.prompt,
        parameters=gen.parameters, created_at=gen.timestamp, image_mime=gen.image_mime,
        image_bytes=gen.image_bytes, model=gen.model, operation=gen.operation,
        error=None if outcome is None else (outcome.download_problem or outcome.error_message),
        parent_id=gen.parent_id, cost_usd=gen.cost_usd, batch_id=gen.batch_id,
        activity=running.live.describe() if pending else None, elapsed_s=running.live.elapsed_s() if pending else None,
    ).model_dump(mode="json")


async def batch_result(state: AppState, running: list[Running], batch_id: str, *, seeds: str,
                       label: str) -> CallToolResult:
    """Every image of the batch: what was made (a resource link each), what failed and why, what still
    runs (collect each with pix_wait), and one contact sheet of the thumbnails."""
    ended = [await _ended(state, r) for r in running]
    log_call(ended[0][0])  # the call's log line: the first image's id and how it ended
    made = [gen for gen, outcome in ended if outcome is not None and outcome.ok]
    failed = [gen for gen, outcome in ended if outcome is not None and not outcome.ok]
    pending = [gen for gen, outcome in ended if outcome is None]
    lines = [f"{label}s {_ids([gen for gen, _ in ended])} (batch {batch_id}, {seeds}): {len(made)} made"
             + (f", {len(failed)} failed" if failed else "") + (f", {len(pending)} still running" if pending else "")
             + "."]
    content: list[ContentBlock] = []
    for gen, outcome in ended:
        seed = f" (seed {gen.parameters['seed']})" if gen.parameters.get("seed") is not None else ""
        if outcome is None:
            lines.append(f"#{gen.id}{seed}: still running; collect it with pix_wait and id {gen.id}.")
        elif not outcome.ok:
            lines.append(f"#{gen.id}{seed}: failed ({gen.status}). {outcome.error_message}")
        elif gen.status == DOWNLOAD_FAILED:
            lines.append(f"#{gen.id}{seed}: {gen.image_url} (not kept: {outcome.download_problem}; Pixazo's URL "
                         "may expire, download it soon).")
        else:
            lines.append(f"#{gen.id}{seed}: {gen.resource_uri}")
            if gen.resource_uri is not None:
                content.append(ResourceLink(type="resource_link", uri=gen.resource_uri, name=f"generation-{gen.id}",
                                            title=gen.prompt[:80], mime_type=gen.image_mime, size=gen.image_bytes))
    if pending:
        lines.append(f"They go on without waiting for you (pix_wait each id, pix_cancel to stop one, each call "
                     f"waits up to {state.settings.answer_within_s:g} s); do not call this tool again for them, "
                     "which would make and pay for more images.")
    content.insert(0, TextContent(type="text", text="\n".join(lines)))
    if made and any(gen.image_path for gen in made) and state.settings.inline_image != "none":
        sheet = await _contact_sheet(state, ended)
        content.append(ImageContent(type="image", data=base64.b64encode(sheet).decode(), mime_type=THUMB_MIME))
    status = PENDING if pending else (SUCCESS_ALL if not failed else (FAILED if not made else PARTIAL))
    first_kept = next((gen.resource_uri for gen in made if gen.resource_uri), None)
    structured = BatchResult(id=running[0].generation.id, status=status, resource_uri=first_kept, batch_id=batch_id,
                             images=[_structured(gen, outcome, r) for (gen, outcome), r in zip(ended, running,
                                                                                            strict=True)])
    return CallToolResult(content=content, structured_content=structured.model_dump(mode="json"),
                          is_error=status == FAILED)


async def _contact_sheet(state: AppState, ended: list[tuple[Generation, Outcome | None]]) -> bytes:
    """The thumbnails in a grid (made in the image pool); a cell for each image, blank when it has none."""
    images = state.service.images
    cells: list[tuple[bytes | None, str]] = []
    for gen, outcome in ended:
        thumb = None
        if outcome is not None and outcome.ok and gen.image_path is not None:
            thumb = outcome.thumbnail or await images.thumbnail(gen.image_path)
        word = "" if thumb is not None else (" running" if outcome is None else f" {gen.status}")
        cells.append((thumb, f"#{gen.id}{word}"))
    return await asyncio.get_running_loop().run_in_executor(images.pool, make_contact_sheet, cells)
