"""Waiting for a generation's row to leave PENDING, from any process on the same database.

PostgreSQL notifies: a trigger (migration 11) sends the row's id on the channel `pixazo_finished` when
its status leaves PENDING, and one listening connection per process wakes whoever waits for that id,
so a pix_wait on one replica hears of a finish on another at once. SQLite has no notifications: the
row is read every POLL_S (cheap: a primary-key read on a reader connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

CHANNEL = "pixazo_finished"
POLL_S = 0.2
RECONNECT_S = 1.0
LISTEN_READY_S = 5.0  # waited for the listening connection before falling back to reading the row

# Whether the row is still PENDING (False also when it is gone).
StillPending = Callable[[], Awaitable[bool]]


async def poll_until_finished(still_pending: StillPending, timeout_s: float) -> None:
    """Read the row every POLL_S until it has left PENDING or `timeout_s` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await still_pending():
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(POLL_S, left))


class FinishListener:
    """One LISTEN connection per process (started on first use), and the waiters for each id."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wait(self, gen_id: int, still_pending: StillPending, timeout_s: float) -> None:
        """Return once the row has left PENDING, or after `timeout_s`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="pixazo-finish-listener")
        try:
            async with asyncio.timeout(min(LISTEN_READY_S, timeout_s)):
                await self._listening.wait()
        except TimeoutError:
            logger.warning("no LISTEN connection to PostgreSQL: reading generation %s's row instead", gen_id)
            await poll_until_finished(still_pending, timeout_s)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(gen_id, set()).add(future)
        try:
            # Registered before the read: a finish between the two still wakes us.
            if not await still_pending():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout_s)
        finally:
            waiting = self._waiters.get(gen_id)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiters[gen_id]

    def _wake(self, gen_id: int | None) -> None:
        """Wake the waiters of one id (None: all of them, who then read their rows again)."""
        ids = list(self._waiters) if gen_id is None else [gen_id]
        for key in ids:
            for future in self._waiters.get(key, ()):
                if not future.done():
                    future.set_result(None)

    async def _listen(self) -> None:
        import psycopg  # here: a server on SQLite never loads the PostgreSQL driver (9 MB of memory)

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    async for note in conn.notifies():
                        if note.payload.isdigit():
                            self._wake(int(note.payload))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("the LISTEN connection to PostgreSQL failed; reconnecting", exc_info=True)
            self._listening.clear()
            self._wake(None)
            await asyncio.sleep(RECONNECT_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
