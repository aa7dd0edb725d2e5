"""One canonical log line per tool call: request id, caller, tool, status, attempts, duration."""

from __future__ import annotations

import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from app.identity.tokens import current_caller

logger = logging.getLogger("pixazo.calls")


@dataclass
class CallInfo:
    """Filled in by the tool while it runs; read when the call ends."""

    request_id: str
    status: str | None = None
    attempts: int | None = None
    generation_id: int | None = None


CALL_INFO: ContextVar[CallInfo | None] = ContextVar("pixazo_call_info", default=None)


class ToolCallLog:
    """MCP server middleware: wraps every tools/call."""

    def __init__(self, prompt_chars: int) -> None:
        self.prompt_chars = prompt_chars

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params or {}
        tool = str(params.get("name", "?"))[:64]
        info = CallInfo(request_id=uuid.uuid4().hex[:16])
        token = CALL_INFO.set(info)
        started = time.monotonic()
        status = "ERROR"
        try:
            result = await call_next(ctx)
            if info.status is not None:
                status = info.status
            elif isinstance(result, dict):
                status = "ERROR" if result.get("isError") else "OK"
            return result
        except anyio.get_cancelled_exc_class():
            # The call itself was cancelled: a generation it had started is cancelled with it (before
            # its answer), whatever the line said so far (PENDING).
            status = "CANCELLED" if info.status in (None, "PENDING") else info.status
            raise
        finally:
            CALL_INFO.reset(token)
            fields: dict[str, Any] = {
                "request_id": info.request_id, "rpc_id": ctx.request_id, "caller": current_caller(), "tool": tool,
                "status": status, "attempts": info.attempts, "generation_id": info.generation_id,
                "duration_ms": round((time.monotonic() - started) * 1000),
            }
            arguments = params.get("arguments")
            if tool == "pix_generate" and isinstance(arguments, dict) and isinstance(arguments.get("prompt"), str):
                prompt = arguments["prompt"]
                fields["prompt"] = prompt[: self.prompt_chars] + ("…" if len(prompt) > self.prompt_chars else "")
            logger.info("tool call %s %s", tool, status, extra=fields)
