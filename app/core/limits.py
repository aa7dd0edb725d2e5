"""Per-caller limits: a sliding one-minute window, a UTC-day count and a UTC-day budget in US dollars.
One caller never touches another.

The counts and the spend come from the shared record (the caller's rows), and each call is counted,
priced and recorded in one atomic step of the database, so several replicas on one database together
admit exactly the allowance and never spend past the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.costs import Budgets, usd
from app.storage.database import RecordStore
from app.storage.records import Generation, parse_utc
from app.storage.rows import BUDGET_EXCEEDED, RATE_LIMITED, CallMeta

__all__ = ["BUDGET_EXCEEDED", "RATE_LIMITED", "CallerLimits", "Refusal", "Spend"]


@dataclass(frozen=True)
class Refusal:
    limit: str  # "pending", "per-minute", "daily" or "budget"
    retry_in_s: float
    message: str


@dataclass(frozen=True)
class Spend:
    """A caller's spend this UTC day in US dollars, its budget and what is left (None: no budget)."""

    spent_usd: float
    budget_usd: float | None
    remaining_usd: float | None


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def _iso(moment: datetime) -> str:
    """The format of the rows' timestamps (records.utc_now), so that the text comparison is a time one."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


class CallerLimits:
    def __init__(self, per_minute: int | None, daily: int | None, store: RecordStore,
                 budgets: Budgets | None = None, max_pending: int | None = None) -> None:
        self.per_minute = per_minute
        self.daily = daily
        self.max_pending = max_pending  # unfinished calls at once (PIXAZO_MAX_BACKGROUND_PER_CALLER)
        self.budgets = budgets or Budgets(None)
        self._store = store

    @staticmethod
    def _since(now: datetime) -> tuple[str, str]:
        return _iso(now - timedelta(seconds=60)), now.strftime("%Y-%m-%d")

    async def record(self, prompt: str, parameters: dict[str, Any], caller: str | None,
                     meta: CallMeta | None = None) -> tuple[Generation, Refusal | None]:
        """The call's row: PENDING when the limits and the budget admit it, else finished RATE_LIMITED or
        BUDGET_EXCEEDED with the reason. `meta.cost_usd` is the call's price (None: unknown)."""
        meta = meta or CallMeta()
        budget = self.budgets.for_caller(caller)
        now = datetime.now(UTC)
        minute_since, day_since = self._since(now)
        if budget is not None and meta.cost_usd is None:
            return await self._refuse_unpriced(prompt, parameters, caller, meta, budget, now)
        # A free call is never refused by the budget, even when the caller is past it (a budget lowered
        # during the day): the store's check would refuse any call once the spend exceeds the budget.
        budget_usd = budget if budget is not None and meta.cost_usd else None
        if self.per_minute is None and self.daily is None and budget_usd is None and self.max_pending is None:
            return await self._store.insert_pending(prompt, parameters, caller, meta=meta), None
        admission = await self._store.insert_admitted(
            prompt, parameters, caller, per_minute=self.per_minute, daily=self.daily,
            minute_since=minute_since, day_since=day_since, meta=meta, budget_usd=budget_usd,
            max_pending=self.max_pending)
        if admission.refused_by is None:
            return admission.generation, None
        if admission.refused_by == "pending":
            return admission.generation, Refusal("pending", 0.0, (
                f"This caller already has {self.max_pending} generations unfinished (the most one caller may "
                "have at once, PIXAZO_MAX_BACKGROUND_PER_CALLER). Nothing was sent to Pixazo. Collect them "
                "with pix_wait (or stop one with pix_cancel), then try again."))
        if admission.refused_by == "budget":
            assert budget_usd is not None  # noqa: S101 - only a budget refuses for the budget
            spent = await self._store.spend_since(caller, day_since)
            wait = _seconds_to_utc_midnight(now)
            return admission.generation, Refusal("budget", wait, (
                f"Daily budget reached: this caller has spent {usd(spent)} of its {usd(budget_usd)} budget "
                f"for this UTC day, and this call costs {usd(meta.cost_usd)} ({meta.model}). "
                f"Nothing was sent to Pixazo. The budget resets at midnight UTC (in {_minutes(wait)} minutes); "
                "free models (price $0) can still be used."))
        if admission.refused_by == "per-minute":
            usage = await self._store.usage(caller, minute_since, day_since)
            oldest = parse_utc(usage.oldest_in_minute) if usage.oldest_in_minute else now
            wait = max(0.0, 60 - (now - oldest).total_seconds())
            return admission.generation, Refusal("per-minute", wait, (
                f"Rate limit reached: {self.per_minute} generations per minute for this caller. "
                f"Nothing was sent to Pixazo. Try again in {max(1, math.ceil(wait))} seconds."))
        wait = _seconds_to_utc_midnight(now)
        return admission.generation, Refusal("daily", wait, (
            f"Daily limit reached: {self.daily} generations per UTC day for this caller. "
            f"Nothing was sent to Pixazo. Try again after midnight UTC "
            f"(in {_minutes(wait)} minutes)."))

    async def _refuse_unpriced(self, prompt: str, parameters: dict[str, Any], caller: str | None,
                               meta: CallMeta, budget: float, now: datetime) -> tuple[Generation, Refusal]:
        """A call whose price is unknown cannot be checked against a budget: refused, never sent, since a
        cap that lets unknown prices through caps nothing."""
        message = (f"{meta.model} has no known price, so it cannot be checked against this caller's daily "
                   f"budget of {usd(budget)}. Nothing was sent to Pixazo. An operator can give it a price "
                   "in PIXAZO_PRICES_FILE.")
        row = await self._store.insert_pending(prompt, parameters, caller, status=BUDGET_EXCEEDED,
                                               meta=CallMeta(meta.model, meta.operation, meta.parent_id, 0.0))
        done = await self._store.finish(row.id, BUDGET_EXCEEDED, error="budget: unknown price",
                                        duration_ms=0, attempts=0)
        return done, Refusal("budget", _seconds_to_utc_midnight(now), message)

    async def spend(self, caller: str | None) -> Spend:
        """What the caller spent this UTC day (calls in flight at their price), its budget and what is left."""
        spent = await self._store.spend_since(caller, self._since(datetime.now(UTC))[1])
        budget = self.budgets.for_caller(caller)
        # Sums of prices in floating point (0.07 + 0.07 = 0.14000000000000001): round for people.
        return Spend(round(spent, 6), budget, None if budget is None else round(max(0.0, budget - spent), 6))

    async def remaining(self, caller: str | None) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.per_minute is None and self.daily is None:
            return out
        now = datetime.now(UTC)
        usage = await self._store.usage(caller, *self._since(now))
        if self.per_minute is not None:
            oldest = parse_utc(usage.oldest_in_minute) if usage.oldest_in_minute else None
            out["per_minute"] = {
                "limit": self.per_minute, "remaining": max(0, self.per_minute - usage.minute),
                "resets_in_s": round(max(0.0, 60 - (now - oldest).total_seconds()), 1) if oldest else 0}
        if self.daily is not None:
            out["daily"] = {"limit": self.daily, "remaining": max(0, self.daily - usage.day),
                            "resets_in_s": round(_seconds_to_utc_midnight(now))}
        return out
