"""Per-caller limits: a sliding one-minute window and a UTC-day count. One caller never touches another.

The counts come from the shared record (the caller's rows), and each call is counted and recorded in one
atomic step of the database, so several replicas on one database together admit exactly the allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.storage.database import RecordStore
from app.storage.records import Generation
from app.storage.rows import RATE_LIMITED, CallMeta

__all__ = ["RATE_LIMITED", "CallerLimits", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    limit: str  # "per-minute" or "daily"
    retry_in_s: float
    message: str


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def _iso(moment: datetime) -> str:
    """The format of the rows' timestamps (records.utc_now), so that the text comparison is a time one."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


class CallerLimits:
    def __init__(self, per_minute: int | None, daily: int | None, store: RecordStore) -> None:
        self.per_minute = per_minute
        self.daily = daily
        self._store = store

    @staticmethod
    def _since(now: datetime) -> tuple[str, str]:
        return _iso(now - timedelta(seconds=60)), now.strftime("%Y-%m-%d")

    async def record(self, prompt: str, parameters: dict[str, Any], caller: str | None,
                     meta: CallMeta | None = None) -> tuple[Generation, Refusal | None]:
        """The call's row: PENDING when the limits admit it, else finished RATE_LIMITED with the reason."""
        if self.per_minute is None and self.daily is None:
            return await self._store.insert_pending(prompt, parameters, caller, meta=meta), None
        now = datetime.now(UTC)
        minute_since, day_since = self._since(now)
        admission = await self._store.insert_admitted(
            prompt, parameters, caller, per_minute=self.per_minute, daily=self.daily,
            minute_since=minute_since, day_since=day_since, meta=meta)
        if admission.refused_by is None:
            return admission.generation, None
        if admission.refused_by == "per-minute":
            usage = await self._store.usage(caller, minute_since, day_since)
            oldest = _parse(usage.oldest_in_minute) if usage.oldest_in_minute else now
            wait = max(0.0, 60 - (now - oldest).total_seconds())
            return admission.generation, Refusal("per-minute", wait, (
                f"Rate limit reached: {self.per_minute} generations per minute for this caller. "
                f"Nothing was sent to Pixazo. Try again in {max(1, math.ceil(wait))} seconds."))
        wait = _seconds_to_utc_midnight(now)
        return admission.generation, Refusal("daily", wait, (
            f"Daily limit reached: {self.daily} generations per UTC day for this caller. "
            f"Nothing was sent to Pixazo. Try again after midnight UTC "
            f"(in {max(1, math.ceil(wait / 60))} minutes)."))

    async def remaining(self, caller: str | None) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.per_minute is None and self.daily is None:
            return out
        now = datetime.now(UTC)
        usage = await self._store.usage(caller, *self._since(now))
        if self.per_minute is not None:
            oldest = _parse(usage.oldest_in_minute) if usage.oldest_in_minute else None
            out["per_minute"] = {
                "limit": self.per_minute, "remaining": max(0, self.per_minute - usage.minute),
                "resets_in_s": round(max(0.0, 60 - (now - oldest).total_seconds()), 1) if oldest else 0}
        if self.daily is not None:
            out["daily"] = {"limit": self.daily, "remaining": max(0, self.daily - usage.day),
                            "resets_in_s": round(_seconds_to_utc_midnight(now))}
        return out
