"""Ownership of calls in flight when several processes share one database.

Each instance renews a lease every third of PIXAZO_LEASE_S; at each renewal it marks INTERRUPTED the
PENDING rows whose owner's lease has lapsed (or whose owner, on this same machine, is a process that no
longer runs). A lapsed owner's rows are thus found within the lease plus one renewal, without a
restart, and a live instance's rows are never touched, whoever else opens the database.

Rows of submitted queue jobs (a request id) are not given up that way: the job still runs at Pixazo
and may be paid. They are claimed instead, and their polling resumed here (app.core.jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from app.storage.database import RecordStore
from app.storage.rows import pid_alive

if TYPE_CHECKING:
    from app.core.jobs import JobResumer

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, store: RecordStore, lease_s: float, jobs: JobResumer | None = None) -> None:
        self.store = store
        self.lease_s = lease_s
        self.interval_s = lease_s / 3
        self.jobs = jobs  # where claimed queue jobs go; None: leave them to other instances
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> int:
        """Renew this instance's lease, end the plain calls of owners that are gone, and take over their
        submitted queue jobs. Returns how many calls ended INTERRUPTED."""
        await self.store.renew_lease(self.lease_s)
        dead = [i for i, pid in await self.store.same_host_instances() if not pid_alive(pid)]
        reaped = await self.store.reap_lapsed(dead)
        # Upload links that expired unused end their rows here too (any instance may: one statement).
        await self.store.expire_upload_links(time.time())
        if reaped:
            logger.warning("marked %d generation(s) of a stopped instance as INTERRUPTED", reaped)
        if self.jobs is not None:
            claimed = await self.store.claim_jobs(dead)
            if claimed:
                logger.warning("resuming %d queue job(s) of a stopped instance: generations %s", len(claimed),
                               ", ".join(str(g.id) for g in claimed))
                self.jobs.resume(claimed)
        return reaped

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:
                logger.warning("could not renew the lease on calls in flight; retrying in %.0f s",
                               self.interval_s, exc_info=True)

    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pixazo-lease")

    async def stop(self) -> None:
        """Stop renewing; this instance's rows still PENDING end INTERRUPTED (those of submitted queue jobs
        stay PENDING, unowned, for the next instance) and its lease ends. Stop the JobResumer first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            left = await self.store.release()
        except Exception:
            logger.warning("could not release this instance's calls in flight; they end INTERRUPTED once "
                           "its lease lapses", exc_info=True)
            return
        if left:
            logger.warning("marked %d generation(s) still in flight at shutdown as INTERRUPTED", left)
