"""The read-only tools: list_generations, get_generation and pix_status."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from app import __version__
from app.errors import NotFoundError
from app.identity.tokens import current_caller
from app.protocol.results import GenerationDetail, GenerationPage, GenerationRecord, generation_detail, state_of
from app.storage.records import MAX_ID, MIN_ID


async def list_generations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=100, description="How many to return.")] = 20,
    status: Annotated[str | None, Field(max_length=40, description="Only this status, e.g. SUCCESS or HTTP_429.")
                      ] = None,
    query: Annotated[str | None, Field(max_length=500, description="Words the prompt must contain.")] = None,
    before_id: Annotated[int | None, Field(ge=MIN_ID, le=MAX_ID, description="Only ids below this (for paging).")
                         ] = None,
    caller: Annotated[str | None, Field(max_length=64, description="Only this caller's generations.")] = None,
) -> GenerationPage:
    """List recorded generations, newest first, optionally filtered by status, caller or prompt words."""
    service = state_of(ctx).service
    found = await service.page(current_caller(), limit=limit, status=status, query=query, before_id=before_id,
                               caller=caller)
    records = [GenerationRecord.model_validate(g.public()) for g in found]
    return GenerationPage(generations=records,
                          next_before_id=records[-1].id if len(records) == limit else None)


async def get_generation(ctx: Context,
                         id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID, description="The generation's id.")],
                         ) -> GenerationDetail:
    """Get one recorded generation by id: prompt, parameters, status, URLs, the stored image's details,
    its model and operation, the generation it was made from (`parent`) and those made from it
    (`children`, newest first)."""
    service, viewer = state_of(ctx).service, current_caller()
    try:
        gen = await service.get(id, viewer)
    except NotFoundError as exc:
        raise ToolError(str(exc)) from None
    return await generation_detail(service, gen, viewer)


class LimitState(BaseModel):
    limit: int
    remaining: int
    resets_in_s: float


class StatusResult(BaseModel):
    """What the server can tell a caller about itself and the caller's allowance."""

    caller: str | None = Field(description="Your caller name (null when the server runs without tokens).")
    per_minute: LimitState | None = Field(description="Your per-minute allowance; null when unlimited.")
    daily: LimitState | None = Field(description="Your allowance for this UTC day; null when unlimited.")
    spent_today_usd: float = Field(description=(
        "What your calls cost this UTC day, in US dollars (calls in flight count at their price)."))
    daily_budget_usd: float | None = Field(description=(
        "What you may spend per UTC day, in US dollars; null when there is no budget. A call that would "
        "pass it is refused (BUDGET_EXCEEDED) with nothing sent; it resets at midnight UTC."))
    budget_remaining_usd: float | None = Field(description=(
        "What is left of your budget today, in US dollars; null when there is no budget."))
    breaker: str = Field(description="closed (normal), open (Pixazo failing, calls paused) or half_open.")
    breaker_retry_in_s: float = Field(description="Seconds until calls are tried again, when open.")
    api_key_configured: bool = Field(description="Whether the server has a Pixazo key.")
    calls_in_flight: int
    calls_queued: int
    version: str


async def pix_status(ctx: Context) -> StatusResult:
    """Your remaining limits, your spend today and what is left of your budget, whether Pixazo is
    reachable (the circuit breaker) and whether the server has a Pixazo key. Cheap: call it before a
    batch of generations."""
    service = state_of(ctx).service
    caller = current_caller()
    remaining = await service.limits.remaining(caller)
    spend = await service.limits.spend(caller)
    minute, daily = remaining.get("per_minute"), remaining.get("daily")
    return StatusResult(
        caller=caller,
        per_minute=LimitState.model_validate(minute) if minute else None,
        daily=LimitState.model_validate(daily) if daily else None,
        spent_today_usd=spend.spent_usd, daily_budget_usd=spend.budget_usd, budget_remaining_usd=spend.remaining_usd,
        breaker=service.breaker.state, breaker_retry_in_s=round(service.breaker.retry_in(), 1),
        api_key_configured=service.client.has_key, calls_in_flight=service.cap.in_flight,
        calls_queued=service.cap.waiting, version=__version__,
    )


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


