"""Per-caller limits: a sliding one-minute window and a UTC-day count. One caller never touches another."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.storage.records import GenerationStore

RATE_LIMITED = "RATE_LIMITED"


@dataclass(frozen=True)
class Refusal:
    limit: str  # "per-minute" or "daily"
    retry_in_s: float
    message: str


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class CallerLimits:
    def __init__(self, per_minute: int | None, daily: int | None, store: GenerationStore) -> None:
        self.per_minute = per_minute
        self.daily = daily
        self._store = store
        self._windows: dict[str | None, deque[float]] = {}
        self._days: dict[tuple[str | None, str], int] = {}
        self._lock = asyncio.Lock()

    async def _daily_count(self, caller: str | None, day: str) -> int:
        key = (caller, day)
        if key not in self._days:
            # After a restart the day's count comes from the record.
            self._days[key] = await self._store.count_since(caller, day, RATE_LIMITED)
        return self._days[key]

    async def admit(self, caller: str | None) -> Refusal | None:
        """Count this call against the caller's limits, or say which limit refuses it. Atomic."""
        if self.per_minute is None and self.daily is None:
            return None
        async with self._lock:
            now = time.monotonic()
            window = self._windows.setdefault(caller, deque())
            while window and now - window[0] >= 60:
                window.popleft()
            if self.per_minute is not None and len(window) >= self.per_minute:
                wait = 60 - (now - window[0])
                return Refusal("per-minute", wait, (
                    f"Rate limit reached: {self.per_minute} generations per minute for this caller. "
                    f"Nothing was sent to Pixazo. Try again in {max(1, math.ceil(wait))} seconds."))
            today = datetime.now(UTC)
            day = today.strftime("%Y-%m-%d")
            if self.daily is not None:
                used = await self._daily_count(caller, day)
                if used >= self.daily:
                    wait = _seconds_to_utc_midnight(today)
                    return Refusal("daily", wait, (
                        f"Daily limit reached: {self.daily} generations per UTC day for this caller. "
                        f"Nothing was sent to Pixazo. Try again after midnight UTC "
                        f"(in {max(1, math.ceil(wait / 60))} minutes)."))
                self._days[(caller, day)] = used + 1
            window.append(now)
            return None

    async def remaining(self, caller: str | None) -> dict[str, object]:
        out: dict[str, object] = {}
        async with self._lock:
            if self.per_minute is not None:
                now = time.monotonic()
                window = [t for t in self._windows.get(caller, ()) if now - t < 60]
                out["per_minute"] = {"limit": self.per_minute, "remaining": max(0, self.per_minute - len(window)),
                                     "resets_in_s": round(60 - (now - window[0]), 1) if window else 0}
            if self.daily is not None:
                today = datetime.now(UTC)
                used = await self._daily_count(caller, today.strftime("%Y-%m-%d"))
                out["daily"] = {"limit": self.daily, "remaining": max(0, self.daily - used),
                                "resets_in_s": round(_seconds_to_utc_midnight(today))}
        return out
