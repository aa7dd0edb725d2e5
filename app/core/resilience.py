"""Staying correct against a slow, rate-limited, sometimes broken gateway: retry policy, circuit breaker,
and a concurrency cap with a bounded, fair queue."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamJobError,
    UpstreamJobTimeoutError,
)

# Pixazo surely made no image: rate limited, or the gateway in front of the model was down.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def is_retryable(exc: UpstreamError) -> bool:
    """Only where no image can have been made (and paid for)."""
    if isinstance(exc, UpstreamHTTPError):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, UpstreamConnectionError) and not exc.sent


def counts_against_gateway(exc: UpstreamError) -> bool:
    """Failures that say the gateway is unwell (not that our request was bad)."""
    if isinstance(exc, UpstreamHTTPError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, UpstreamJobTimeoutError):
        # A job still running at our deadline is a slow job; a status route that never answered is not.
        return exc.state is None
    # A job that ran and failed says the model could not make this image, not that Pixazo is down.
    return not isinstance(exc, UpstreamJobError)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter; a Retry-After from the gateway wins."""

    base_s: float = 1.0
    cap_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        return rng.uniform(0, min(self.cap_s, self.base_s * (2 ** (attempt - 1))))


class BreakerOpenError(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open for {retry_in:.0f} s")
        self.retry_in = retry_in


class CircuitBreaker:
    """closed -> (N consecutive gateway failures) -> open -> (cool-down) -> half_open: one probe decides."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or time.monotonic() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (time.monotonic() - self._opened_at))

    def before_call(self) -> bool:
        """Raise BreakerOpenError to fail fast; return True when this call is the half-open probe."""
        if self._opened_at is None:
            return False
        if self._probing or time.monotonic() - self._opened_at < self.cooldown_s:
            raise BreakerOpenError(max(1.0, self.retry_in()))
        self._probing = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self, probe: bool) -> None:
        self.failures += 1
        if probe or self.failures >= self.threshold:
            self._opened_at = time.monotonic()
        self._probing = False

    def release_probe(self, probe: bool) -> None:
        """A probe that ended without a verdict (cancelled, or a request error) lets the next call probe."""
        if probe:
            self._probing = False


class QueueTimeoutError(Exception):
    pass


class ConcurrencyCap:
    """At most `limit` calls hold a slot; the rest wait up to `queue_timeout_s`, in one queue per caller.

    A freed slot goes to the waiting caller with the fewest slots in flight (ties: the caller served
    longest ago), first come first served within a caller. One caller's burst then holds the slots only
    while nobody else waits: another caller's call gets the next free slot.
    """

    def __init__(self, limit: int, queue_timeout_s: float) -> None:
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self.waiting = 0
        self._held: dict[str | None, int] = {}  # caller -> slots in flight
        self._served: dict[str | None, int] = {}  # caller -> when it last got a slot (a counter)
        self._clock = itertools.count()
        self._queues: dict[str | None, deque[asyncio.Future[None]]] = {}  # callers with waiters

    def held_by(self, caller: str | None) -> int:
        return self._held.get(caller, 0)

    def _take(self, caller: str | None) -> None:
        self._served[caller] = next(self._clock)
        self.in_flight += 1
        self._held[caller] = self._held.get(caller, 0) + 1

    def _release(self, caller: str | None) -> None:
        self.in_flight -= 1
        left = self._held[caller] - 1
        if left:
            self._held[caller] = left
        else:
            del self._held[caller]
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to waiters, fairest first."""
        while self.in_flight < self.limit and self._queues:
            caller = min(self._queues, key=lambda c: (self.held_by(c), self._served.get(c, -1)))
            queue = self._queues[caller]
            waiter = queue.popleft()
            if not queue:
                del self._queues[caller]
            self.waiting -= 1
            if waiter.done():  # its task was cancelled and has not withdrawn it yet
                continue
            self._take(caller)
            waiter.set_result(None)

    def _withdraw(self, caller: str | None, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(caller)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self.waiting -= 1
            if not queue:
                del self._queues[caller]

    @asynccontextmanager
    async def slot(self, caller: str | None = None) -> AsyncIterator[float]:
        """Yields the seconds spent waiting for the slot."""
        started = time.monotonic()
        if self.in_flight < self.limit and not self._queues:
            self._take(caller)
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queues.setdefault(caller, deque()).append(waiter)
            self.waiting += 1
            try:
                async with asyncio.timeout(self.queue_timeout_s):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._release(caller)  # granted just as the wait ended: pass the slot on
                else:
                    self._withdraw(caller, waiter)
                if isinstance(exc, TimeoutError):
                    raise QueueTimeoutError from None
                raise
        try:
            yield time.monotonic() - started
        finally:
            self._release(caller)
