"""Running a checked request for the calling agent: progress while it runs, the result when it ends."""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from app.core.requests import GenerationRequest
from app.core.state import AppState
from app.identity.tokens import current_caller
from app.protocol.calllog import CALL_INFO
from app.protocol.results import generation_result


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


