"""Running a call for the calling agent, and the tools for calls that outlive it: pix_wait and pix_cancel.

An image-making call holds its client at most PIXAZO_ANSWER_WITHIN_S (or not at all, `wait: false`);
then it answers PENDING with the id while the work goes on (app.core.background). pix_wait collects a
generation by id, from any session and on any replica (the store says when a row ends elsewhere);
pix_cancel stops one. Progress names the generation from the start, so an agent whose client gave up
can always find its call again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from app.core.background import Running
from app.core.batches import MAX_VARIATIONS
from app.core.requests import GenerationRequest
from app.core.service import CANCELLED, Outcome
from app.core.state import AppState
from app.core.uploads import UPLOAD
from app.identity.tokens import current_caller
from app.protocol.calllog import CALL_INFO
from app.protocol.results import (
    ImageOut,
    generation_result,
    label_for,
    outcome_of,
    pending_result,
    state_of,
    visible,
)
from app.storage.records import MAX_ID, MIN_ID, PENDING, Generation, parse_utc

WAIT_HELP = "false: answer at once (PENDING)."
WAIT_FIELD: Any = (Annotated[bool, Field(description=WAIT_HELP)], True)
N_HELP = "Images; seeds seed, seed+1... (random if no seed)."


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # 1 goes without saying; tools/list is paid for in every conversation


N_FIELD: Any = (Annotated[int, Field(ge=1, le=MAX_VARIATIONS, description=N_HELP, json_schema_extra=_no_default)], 1)


async def run_request(ctx: Context, state: AppState, request: GenerationRequest,
                      label: str = "Generated image", wait: bool = True) -> CallToolResult:
    """Admit one checked request, run it in the background, and wait for it within the answer bound."""
    pending, refusal = await state.service.admit(request, current_caller())
    if refusal is not None:
        return await _answer(state, Outcome(pending, refusal), label)
    assert state.background is not None  # noqa: S101 - the lifespan always makes one
    running = state.background.launch(pending, request)
    log_call(pending)
    if not wait:
        return _pending(state, pending, running)
    outcome = await _follow(ctx, state, running, state.settings.answer_within_s, cancel_with_client=True)
    if outcome is None:
        return _pending(state, pending, running)
    return await _answer(state, outcome, label)


async def _answer(state: AppState, outcome: Outcome, label: str) -> CallToolResult:
    log_call(outcome.generation)
    return await generation_result(outcome, state, label)


def log_call(gen: Generation) -> None:
    """The call's log line names its generation as soon as there is one."""
    if (info := CALL_INFO.get()) is not None:
        info.status, info.attempts, info.generation_id = gen.status, gen.attempts, gen.id


def _pending(state: AppState, gen: Generation, running: Running | None) -> CallToolResult:
    if running is not None:
        activity, elapsed = running.live.describe(), running.live.elapsed_s()
    elif gen.operation == UPLOAD:  # an upload link: nothing runs until the person's file arrives
        activity, elapsed = "waiting for the upload", _age_s(gen)
    else:  # running on another instance: the row says what it can
        activity = (f"Pixazo job {gen.request_id}" if gen.request_id else "running on another server instance")
        elapsed = _age_s(gen)
    return pending_result(gen, activity, elapsed, state.settings.answer_within_s)


def _age_s(gen: Generation) -> int:
    return max(0, round((datetime.now(UTC) - parse_utc(gen.timestamp)).total_seconds()))


async def _follow(ctx: Context, state: AppState, running: Running, wait_s: float, *,
                  cancel_with_client: bool) -> Outcome | None:
    """Wait up to `wait_s` for a generation running here, with progress; None if it has not ended.

    `cancel_with_client`: the call that launched it, before its answer: if its client cancels, so does
    the work. pix_wait's client going away leaves the work alone.
    """
    gen_id = running.generation.id
    progress = _Progress(ctx, state.settings.progress_interval_s, gen_id) if wants_progress(ctx) else None
    if progress is not None:
        running.live.watchers.append(progress.job)
    try:
        async with anyio.create_task_group() as tg:
            if progress is not None:
                await progress.report(f"Generation {gen_id}: " + (
                    "generating with Pixazo" if running.live.phase == "recorded" else running.live.describe()))
                tg.start_soon(progress.heartbeat, running)
            try:
                await asyncio.wait({running.task}, timeout=wait_s)
            except asyncio.CancelledError:
                if cancel_with_client:
                    running.task.cancel()
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait({running.task})  # its row is finished CANCELLED first
                raise
            finally:
                tg.cancel_scope.cancel()
    finally:
        if progress is not None:
            running.live.watchers.remove(progress.job)
    if not running.task.done():
        return None
    if running.task.cancelled():  # pix_cancel, from another session: the row says how it ended
        gen = await state.service.store.get(gen_id)
        return outcome_of(gen) if gen is not None else None
    outcome = running.task.result()
    if progress is not None:
        await progress.report(f"Generation {gen_id}: finished {outcome.generation.status}")
    return outcome


def wants_progress(ctx: Context) -> bool:
    """Whether the caller sent a progress token (without one, no heartbeat task is worth starting)."""
    meta: Any = ctx.request_context.meta
    return bool(meta) and (meta.get("progress_token") is not None or meta.get("progressToken") is not None)


class _Progress:
    """MCP progress for a long call: a start, a heartbeat (keeps proxies from closing the stream), an end.

    Every message names the generation ("Generation 12: ..."). For a queue model, every change of the
    job's state is reported at once ("Pixazo job abc: QUEUED"), and the heartbeat repeats what the call
    is doing with the time so far. Progress values only grow, as the spec asks; there is no total
    because Pixazo gives no estimate. Only built when the client sent a progress token.
    """

    def __init__(self, ctx: Context, interval: float, gen_id: int) -> None:
        self._ctx = ctx
        self._interval = interval
        self._gen_id = gen_id
        self._step = 0
        self._job: tuple[str, str] | None = None  # (request id, state) last reported

    async def report(self, message: str) -> None:
        self._step += 1
        await self._ctx.report_progress(self._step, None, message)

    async def job(self, request_id: str, state: str) -> None:
        """A JobWatcher: a new state is reported now; the same one waits for the heartbeat."""
        if self._job == (request_id, state):
            return
        self._job = (request_id, state)
        await self.report(f"Generation {self._gen_id}: Pixazo job {request_id}: {state}")

    async def heartbeat(self, running: Running | None, started: float | None = None) -> None:
        started = anyio.current_time() if started is None else started
        while True:
            await anyio.sleep(self._interval)
            if running is not None:
                doing, waited = running.live.describe(), running.live.elapsed_s()
            else:
                doing, waited = "still running", round(anyio.current_time() - started)
            await self.report(f"Generation {self._gen_id}: {doing} ({waited} s)")


class CancelResult(BaseModel):
    id: int
    status: str  # CANCELLED, or how it ended first
    may_be_charged: bool
    cost_usd: float | None


async def pix_wait(
    ctx: Context,
    id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)],
    timeout_s: Annotated[float | None, Field(ge=0, le=3600, description="Capped by the server.")] = None,
) -> Annotated[CallToolResult, ImageOut]:
    """Wait for a generation (one answered PENDING, or whose call your client gave up on); answer as its call
would have, or PENDING again."""
    state, viewer, gen = state_of(ctx), current_caller(), await visible(ctx, id)
    bound = state.settings.answer_within_s
    wait_s = bound if timeout_s is None else min(timeout_s, bound)
    running = state.background.running(id) if state.background is not None else None
    outcome: Outcome | None = None
    if gen.status == PENDING and running is not None:
        outcome = await _follow(ctx, state, running, wait_s, cancel_with_client=False)
    elif gen.status == PENDING:
        await _await_row(ctx, state, gen, wait_s)
    if outcome is None:
        gen = await state.service.get(id, viewer)
        if gen.status == PENDING:
            log_call(gen)
            return _pending(state, gen, state.background.running(id) if state.background else None)
        outcome = outcome_of(gen)
    return await _answer(state, outcome, label_for(outcome.generation))


async def _await_row(ctx: Context, state: AppState, gen: Generation, wait_s: float) -> None:
    """Wait for a row another instance (or a resumed job here) is finishing, with a heartbeat."""
    if not wants_progress(ctx):
        await state.service.store.wait_finished(gen.id, wait_s)
        return
    progress = _Progress(ctx, state.settings.progress_interval_s, gen.id)
    async with anyio.create_task_group() as tg:
        await progress.report(f"Generation {gen.id}: waiting for it to end")
        tg.start_soon(progress.heartbeat, None, anyio.current_time() - _age_s(gen))
        await state.service.store.wait_finished(gen.id, wait_s)
        tg.cancel_scope.cancel()


async def pix_cancel(
    ctx: Context,
    id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)],
) -> CallToolResult:
    """Stop a generation still running; says whether Pixazo may still charge for it."""
    state, gen = state_of(ctx), await visible(ctx, id)
    if gen.status != PENDING:
        raise ToolError(f"Generation {id} already ended ({gen.status}): there is nothing to cancel.")
    if state.background is not None:
        await state.background.cancel(id)
    # Not running here (another instance, which notices within a second), or a resumed job whose task
    # leaves the row as it was: the row is ended here if it is still PENDING.
    await state.service.store.end_pending(id, CANCELLED, "cancelled with pix_cancel")
    done = await state.service.store.get(id)
    assert done is not None  # noqa: S101 - rows are never deleted
    log_call(done)
    price = done.cost_usd or 0.0  # 0 when nothing can be charged (never sent, or a free model)
    charged = price > 0
    cost = f" (${price:.4g})" if charged else ""
    if done.status != CANCELLED:
        text = f"Generation {id} ended {done.status} before it could be cancelled; pix_wait shows it."
    elif done.operation == UPLOAD:
        text = f"Generation {id} is cancelled: its upload link no longer works. Nothing was sent to Pixazo."
    elif done.request_id is not None:
        text = (f"Generation {id} is cancelled: its Pixazo queue job {done.request_id} is no longer followed. "
                "Pixazo has no way to cancel a job, so it may still run" + (f" and be charged{cost}." if charged
                                                                            else "; this model is free."))
    elif done.attempts == 0:
        text = f"Generation {id} is cancelled before anything reached Pixazo: nothing is charged."
    else:
        text = (f"Generation {id} is cancelled. Its request had reached Pixazo" + (
            f", which may still charge for it{cost}." if charged else "; this model is free."))
    result = CancelResult(id=id, status=done.status, may_be_charged=charged, cost_usd=done.cost_usd)
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=result.model_dump(mode="json"))
