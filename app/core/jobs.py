"""Queue jobs this instance took over: polled to their end in the background, their rows finished.

A queue model's job runs at Pixazo whatever happens to the server that submitted it, and may be paid.
Its row keeps the request id, so when that server is gone (SIGKILL, a crash, a clean stop that left the
job PENDING) the lease keeper of any live instance claims the row (`RecordStore.claim_jobs`) and hands
it here. Each job is followed like a live call (GenerationService.resume) with at most
PIXAZO_RESUME_CONCURRENCY at once; the rest wait, their rows PENDING and owned by this instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.core.service import GenerationService
from app.storage.records import Generation

logger = logging.getLogger(__name__)


class JobResumer:
    """Owned by the lifespan: started with the service, stopped before the lease is released."""

    def __init__(self, service: GenerationService, concurrency: int) -> None:
        self.service = service
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def active(self) -> int:
        """Jobs being followed or waiting for a slot."""
        return len(self._tasks)

    def following(self) -> list[int]:
        """The ids of the rows whose jobs are followed (or wait for a slot) here."""
        return list(self._tasks)

    async def cancel(self, gen_id: int) -> bool:
        """Stop following one job (pix_cancel: its row is already CANCELLED); False if not followed here."""
        task = self._tasks.get(gen_id)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    def resume(self, claimed: list[Generation]) -> None:
        """Follow each claimed job in its own task (a row already followed here is not followed twice)."""
        if self._stopped:
            # Stopping: the rows stay PENDING and owned by us; the lease's release leaves them to others.
            return
        loop = asyncio.get_running_loop()
        for gen in claimed:
            if gen.id in self._tasks:
                continue
            task = loop.create_task(self._follow(gen), name=f"pixazo-job-{gen.id}")
            self._tasks[gen.id] = task
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for gen_id, known in list(self._tasks.items()):
            if known is task:
                del self._tasks[gen_id]

    async def _follow(self, gen: Generation) -> None:
        async with self._slots:
            outcome = await self.service.resume(gen)
        logger.info("generation %s: resumed job %s ended %s", gen.id, gen.request_id, outcome.generation.status)

    async def stop(self) -> None:
        """Stop following: the jobs' rows stay PENDING with their request ids, for the next instance."""
        self._stopped = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            logger.info("left %d queue job(s) being followed to the next instance", len(tasks))
