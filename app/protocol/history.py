"""The read-only tools: list_generations, get_generation and pix_status."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from app import __version__
from app.core.batches import grouped
from app.core.uploads import UPLOAD
from app.identity.tokens import current_caller
from app.protocol.results import (
    DetailOut,
    GenerationPage,
    GenerationRecord,
    PageOut,
    generation_detail,
    state_of,
    visible,
)
from app.storage.records import MAX_ID, MIN_ID, Generation
from app.storage.statuses import KNOWN_STATUSES, is_known


async def list_generations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
    status: Annotated[str | None, Field(max_length=40, description="e.g. SUCCESS, PENDING, HTTP_429.")] = None,
    query: Annotated[str | None, Field(max_length=500, description="Words the prompt must contain.")] = None,
    before_id: Annotated[int | None, Field(ge=MIN_ID, le=MAX_ID)] = None,
    caller: Annotated[str | None, Field(max_length=64)] = None,
) -> Annotated[CallToolResult, PageOut]:
    """Recorded generations, newest first, filtered by status, caller or prompt words."""
    service = state_of(ctx).service
    wanted = None
    if status is not None:
        wanted = status.strip().upper()
        if not is_known(wanted):
            raise ToolError(f"Invalid arguments: `status` must be one of {', '.join(sorted(KNOWN_STATUSES))} or "
                            f"HTTP_<code> (got {status!r}).")
    found = await service.page(current_caller(), limit=limit, status=wanted, query=query, before_id=before_id,
                               caller=caller)
    records = [GenerationRecord.model_validate(g.public()) for g in found]
    page = GenerationPage(generations=records, next_before_id=records[-1].id if len(records) == limit else None)
    lines = [_line(group) for group in grouped(found)] or ["No generations match."]
    if page.next_before_id is not None:
        lines.append(f"More: before_id={page.next_before_id}.")
    return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                          structured_content=page.model_dump(mode="json"))


def _line(group: list[Generation]) -> str:
    """One line per generation, and one per batch (variations) with each image's id and status."""
    r = group[0]
    if len(group) == 1:
        head = f"#{r.id} {r.status}"
    else:
        head = f"batch {r.batch_id}: " + ", ".join(f"#{g.id} {g.status}" for g in group) + ";"
    style = f"style {r.style}, " if r.style else ""
    return f"{head} {r.operation} ({r.model}, {style}{r.timestamp[:16].replace('T', ' ')}): {_short(r.prompt)}"


def _short(prompt: str, chars: int = 60) -> str:
    one_line = " ".join(prompt.split())
    return one_line if len(one_line) <= chars else one_line[: chars - 1] + "…"


async def get_generation(ctx: Context, id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)],
                         ) -> Annotated[CallToolResult, DetailOut]:
    """One generation, with its `parent` and `children`."""
    service, viewer, gen = state_of(ctx).service, current_caller(), await visible(ctx, id)
    detail = await generation_detail(service, gen, viewer)
    made = "an upload" if gen.operation == UPLOAD else f"{gen.operation} with {gen.model}"
    text = (f"Generation {gen.id}: {gen.status}, {made}" + (f" in style {gen.style}" if gen.style else "")
            + (f", made from {gen.parent_id}" if gen.parent_id else "") + (f", image {gen.resource_uri}"
                                                                              if gen.resource_uri else "") + ".")
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=detail.model_dump(mode="json"))


class LimitState(BaseModel):
    limit: int
    remaining: int
    resets_in_s: float


class StatusResult(BaseModel):
    # The names say it (no descriptions: tools/list is paid for in every conversation). Null: unlimited,
    # no budget, or (caller) no tokens. Spend counts calls in flight at their price; budgets reset at
    # midnight UTC. breaker: closed, open (Pixazo failing, calls paused) or half_open.
    caller: str | None
    per_minute: dict[str, float] | None  # limit, remaining, resets_in_s
    daily: dict[str, float] | None
    spent_today_usd: float
    daily_budget_usd: float | None
    budget_remaining_usd: float | None
    breaker: str
    breaker_retry_in_s: float
    api_key_configured: bool
    calls_in_flight: int
    calls_queued: int
    version: str


async def pix_status(ctx: Context) -> CallToolResult:
    """Your limits and budget left today, and whether Pixazo is reachable."""
    service = state_of(ctx).service
    caller = current_caller()
    remaining = await service.limits.remaining(caller)
    spend = await service.limits.spend(caller)
    minute, daily = remaining.get("per_minute"), remaining.get("daily")
    status = StatusResult(
        caller=caller,
        per_minute=LimitState.model_validate(minute).model_dump() if minute else None,
        daily=LimitState.model_validate(daily).model_dump() if daily else None,
        spent_today_usd=spend.spent_usd, daily_budget_usd=spend.budget_usd, budget_remaining_usd=spend.remaining_usd,
        breaker=service.breaker.state, breaker_retry_in_s=round(service.breaker.retry_in(), 1),
        api_key_configured=service.client.has_key, calls_in_flight=service.cap.in_flight,
        calls_queued=service.cap.waiting, version=__version__,
    )
    # No published output schema (tools/list is paid for in every conversation): the text says it all,
    # and structuredContent carries StatusResult's fields.
    budget = ("no budget" if status.daily_budget_usd is None
              else f"${status.budget_remaining_usd:g} of ${status.daily_budget_usd:g} left today")
    text = (f"Caller {status.caller or 'anonymous'}: spent ${status.spent_today_usd:g} today ({budget}); Pixazo "
            f"breaker {status.breaker}; {status.calls_in_flight} call(s) in flight, {status.calls_queued} queued.")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=status.model_dump())


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


