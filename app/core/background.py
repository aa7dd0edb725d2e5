"""Image-making calls that outlive their request: each runs as a task the service owns, not the request.

A tool call launches its generation here and waits for it at most PIXAZO_ANSWER_WITHIN_S (or not at
all, `wait: false`); past that it answers PENDING with the id, and the task goes on: a dropped
connection, a closed session or the client's own timeout changes nothing, and the row is finished as a
waiting call's would be. Before that answer, a client's cancellation still cancels the work (the tool
layer cancels the task). After it, only pix_cancel does (`cancel` here, or the row marked CANCELLED
by another instance, which `watch` notices within a second and stops the task it runs).

On SIGTERM they finish within the grace period like any call (the service counts them in flight, and
the lifespan's end waits for them until the drain's deadline, since no connection holds uvicorn back
for them); those left then are cancelled: a sync call's row ends INTERRUPTED, a submitted queue job's
row stays PENDING for the next instance, as for any call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from app.core.jobs import JobResumer
from app.core.requests import GenerationRequest
from app.core.service import CANCELLED, GenerationService, LiveCall, Outcome
from app.storage.records import Generation

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0  # how soon a cancellation made on another instance stops the work here


@dataclass
class Running:
    """One generation in flight in this process."""

    generation: Generation  # its row as admitted (PENDING)
    task: asyncio.Task[Outcome]
    live: LiveCall


class Background:
    """Owned by the lifespan: launches generations, finds them by id, cancels them, stops them all."""

    def __init__(self, service: GenerationService, jobs: JobResumer | None = None) -> None:
        self.service = service
        self.jobs = jobs
        self._running: dict[int, Running] = {}
        self._watch: asyncio.Task[None] | None = None

    def launch(self, pending: Generation, request: GenerationRequest) -> Running:
        live = LiveCall()
        task = asyncio.get_running_loop().create_task(self.service.run(pending, request, live),
                                                      name=f"generation-{pending.id}")
        running = Running(pending, task, live)
        self._running[pending.id] = running
        task.add_done_callback(lambda done: self._done(pending.id, done))
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_cancellations(), name="generation-watch")
        return running

    def _done(self, gen_id: int, task: asyncio.Task[Outcome]) -> None:
        self._running.pop(gen_id, None)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - run() catches everything
            logger.error("generation %s: its task failed", gen_id, exc_info=task.exception())

    def running(self, gen_id: int) -> Running | None:
        return self._running.get(gen_id)

    def unfinished(self) -> int:
        return len(self._running)

    async def cancel(self, gen_id: int) -> bool:
        """Stop a generation running here (its own task, or a queue job resumed here); False if neither.
        The task's row ends CANCELLED (the service writes it as the task unwinds)."""
        running = self._running.get(gen_id)
        if running is not None:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([running.task])
            return True
        return self.jobs is not None and await self.jobs.cancel(gen_id)

    async def _watch_cancellations(self) -> None:
        """Stop what runs here once another instance marked its row CANCELLED (pix_cancel there)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            ids = [*self._running, *(self.jobs.following() if self.jobs is not None else [])]
            if not ids:
                continue
            try:
                ended = await self.service.store.with_status(ids, CANCELLED)
            except Exception:
                logger.warning("could not check for cancellations", exc_info=True)
                continue
            for gen_id in ended:
                logger.info("generation %s: cancelled on another instance; stopping it here", gen_id)
                await self.cancel(gen_id)

    async def stop(self) -> None:
        """The lifespan ends: whatever the drain left running is cancelled (see the module docstring)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        tasks = [r.task for r in self._running.values()]
        deadline = self.service.drain_deadline
        if tasks and deadline is not None:  # a SIGTERM: they may finish within the grace period
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            tasks = [task for task in tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            logger.info("stopped %d generation(s) still running at shutdown", len(tasks))
