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
from app.storage.records import PENDING, Generation, parse_utc
from app.storage.rows import BUDGET_EPSILON, BUDGET_EXCEEDED, RATE_LIMITED, CallMeta

__all__ = ["BUDGET_EXCEEDED", "RATE_LIMITED", "CallerLimits", "Refusal", "Spend"]

# What each refusal's limit is called in a batch's refusal ("... and the daily budget allows 2 now").
LIMIT_NAMES = {"pending": "limit on unfinished generations", "per-minute": "per-minute limit",
               "daily": "daily limit", "budget": "daily budget"}


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
        made, refusal = await self.record_batch(prompt, [parameters], caller, meta)
        return made[0], refusal

    async def record_batch(self, prompt: str, batch: list[dict[str, Any]], caller: str | None,
                           meta: CallMeta | None = None) -> tuple[list[Generation], Refusal | None]:
        """A row per image (the parameters of each in `batch`), all admitted (PENDING) or all refused
        (finished, with the reason): the limits and the budget count every image of the batch."""
        meta = meta or CallMeta()
        budget = self.budgets.for_caller(caller)
        now = datetime.now(UTC)
        minute_since, day_since = self._since(now)
        if budget is not None and meta.cost_usd is None:
            return [await self._refuse_unpriced(prompt, parameters, caller, meta, budget, now)
                    for parameters in batch], self._unpriced(meta, budget, now)
        # A free call is never refused by the budget, even when the caller is past it (a budget lowered
        # during the day): the store's check would refuse any call once the spend exceeds the budget.
        budget_usd = budget if budget is not None and meta.cost_usd else None
        if self.per_minute is None and self.daily is None and budget_usd is None and self.max_pending is None:
            return [await self._store.insert_pending(prompt, parameters, caller, meta=meta)
                    for parameters in batch], None
        admission = await self._store.insert_admitted(
            prompt, batch if len(batch) > 1 else batch[0], caller, per_minute=self.per_minute, daily=self.daily,
            minute_since=minute_since, day_since=day_since, meta=meta, budget_usd=budget_usd,
            max_pending=self.max_pending)
        made = list(admission.generations or (admission.generation,))
        if admission.refused_by is None:
            return made, None
        refusal = await self._refusal(admission.refused_by, caller, meta, budget_usd, now, len(batch))
        if len(batch) > 1:
            allowed = await self._room(admission.refused_by, caller, meta, budget_usd, now, len(batch))
            refusal = Refusal(refusal.limit, refusal.retry_in_s, (
                f"This call asks for {len(batch)} images and the {LIMIT_NAMES[refusal.limit]} allows {allowed} "
                "now; a batch is admitted whole or not at all, so none was sent to Pixazo or charged. "
                + refusal.message))
        return made, refusal

    async def _room(self, limit: str, caller: str | None, meta: CallMeta, budget_usd: float | None,
                    now: datetime, asked: int) -> int:
        """How many images the limit that refused a batch would have let through (read after the fact,
        for the message only)."""
        minute_since, day_since = self._since(now)
        if limit == "pending" and self.max_pending is not None:
            unfinished = await self._store.page(limit=self.max_pending + asked, status=PENDING, caller=caller)
            # Upload links wait for a person, not Pixazo: the admission does not count them either.
            return max(0, self.max_pending - sum(1 for g in unfinished if g.operation != "upload"))
        if limit == "budget" and budget_usd is not None and meta.cost_usd:
            spent = await self._store.spend_since(caller, day_since)
            return max(0, math.floor((budget_usd - spent + BUDGET_EPSILON) / meta.cost_usd))
        usage = await self._store.usage(caller, minute_since, day_since)
        if limit == "per-minute" and self.per_minute is not None:
            return max(0, self.per_minute - usage.minute)
        return max(0, (self.daily or 0) - usage.day)

    async def _refusal(self, refused_by: str, caller: str | None, meta: CallMeta, budget_usd: float | None,
                       now: datetime, asked: int = 1) -> Refusal:
        """Why the store refused a call (of `asked` images), for the caller."""
        minute_since, day_since = self._since(now)
        if refused_by == "pending":
            has = "already has" if asked == 1 else "would have more than"
            return Refusal("pending", 0.0, (
                f"This caller {has} {self.max_pending} generations unfinished (the most one caller may "
                "have at once, PIXAZO_MAX_BACKGROUND_PER_CALLER). Nothing was sent to Pixazo. Collect them "
                "with pix_wait (or stop one with pix_cancel), then try again."))
        if refused_by == "budget":
            assert budget_usd is not None  # noqa: S101 - only a budget refuses for the budget
            spent = await self._store.spend_since(caller, day_since)
            wait = _seconds_to_utc_midnight(now)
            return Refusal("budget", wait, (
                f"Daily budget reached: this caller has spent {usd(spent)} of its {usd(budget_usd)} budget "
                f"for this UTC day, and this call costs {usd(meta.cost_usd)} ({meta.model})"
                + (f" per image, {usd((meta.cost_usd or 0.0) * asked)} for {asked}. " if asked > 1 else ". ") +
                f"Nothing was sent to Pixazo. The budget resets at midnight UTC (in {_minutes(wait)} minutes); "
                "free models (price $0) can still be used."))
        if refused_by == "per-minute":
            usage = await self._store.usage(caller, minute_since, day_since)
            oldest = parse_utc(usage.oldest_in_minute) if usage.oldest_in_minute else now
            wait = max(0.0, 60 - (now - oldest).total_seconds())
            return Refusal("per-minute", wait, (
                f"Rate limit reached: {self.per_minute} generations per minute for this caller. "
                f"Nothing was sent to Pixazo. Try again in {max(1, math.ceil(wait))} seconds."))
        wait = _seconds_to_utc_midnight(now)
        return Refusal("daily", wait, (
            f"Daily limit reached: {self.daily} generations per UTC day for this caller. "
            f"Nothing was sent to Pixazo. Try again after midnight UTC "
            f"(in {_minutes(wait)} minutes)."))

    async def _refuse_unpriced(self, prompt: str, parameters: dict[str, Any], caller: str | None,
                               meta: CallMeta, budget: float, now: datetime) -> Generation:
        """A call whose price is unknown cannot be checked against a budget: refused, never sent, since a
        cap that lets unknown prices through caps nothing."""
        row = await self._store.insert_pending(prompt, parameters, caller, status=BUDGET_EXCEEDED,
                                               meta=CallMeta(meta.model, meta.operation, meta.parent_id, 0.0,
                                                             style=meta.style, batch_id=meta.batch_id))
        return await self._store.finish(row.id, BUDGET_EXCEEDED, error="budget: unknown price",
                                        duration_ms=0, attempts=0)

    @staticmethod
    def _unpriced(meta: CallMeta, budget: float, now: datetime) -> Refusal:
        return Refusal("budget", _seconds_to_utc_midnight(now), (
            f"{meta.model} has no known price, so it cannot be checked against this caller's daily "
            f"budget of {usd(budget)}. Nothing was sent to Pixazo. An operator can give it a price "
            "in PIXAZO_PRICES_FILE."))

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
