"""Staying correct against a slow, rate-limited, sometimes broken gateway: retry policy, circuit breaker,
and a concurrency cap with a bounded queue."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.errors import UpstreamConnectionError, UpstreamError, UpstreamHTTPError

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
    return True


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
    """At most `limit` calls hold a slot; the rest wait up to `queue_timeout_s`."""

    def __init__(self, limit: int, queue_timeout_s: float) -> None:
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self._sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Yields the seconds spent waiting for the slot."""
        started = time.monotonic()
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._sem.acquire()
        except TimeoutError:
            raise QueueTimeoutError from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield time.monotonic() - started
        finally:
            self.in_flight -= 1
            self._sem.release()

