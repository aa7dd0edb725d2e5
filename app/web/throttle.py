"""Failed authentication: every failure is logged (never the token), and a client address that keeps
failing is slowed down, on every route that checks credentials (bearer tokens and the /login form).

The rule: after PIXAZO_AUTH_FAILURE_LIMIT failures in a row from one address, each further failure
blocks that address for twice as long as the one before (1 s, 2 s, 4 s ... up to
PIXAZO_AUTH_BLOCK_MAX_S). While blocked, a request from that address that presents credentials is
answered 429 with Retry-After without checking them, even a valid token: otherwise the block would
not slow guessing at all. Other addresses are never affected, and a success resets the address.
The address is the one uvicorn reports: behind a proxy, list it in FORWARDED_ALLOW_IPS so that
X-Forwarded-For gives each client its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

FORGET_AFTER_S = 3600.0  # an address that has not failed for an hour starts again from zero
MAX_ADDRESSES = 10_000  # the table never grows past this (the oldest entries go first)


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class FailedAuthTracker:
    """Consecutive failures per client address and the block they earn."""

    def __init__(self, limit: int, max_block_s: float) -> None:
        self.limit = limit
        self.max_block_s = max_block_s
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Seconds this address must still wait (0 when it may try)."""
        record = self._records.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - (time.monotonic() if now is None else now))

    def failed(self, address: str, now: float | None = None) -> _Record:
        now = time.monotonic() if now is None else now
        record = self._records.pop(address, None)
        if record is None or now - record.last_failure > FORGET_AFTER_S:
            record = _Record()
        record.failures += 1
        record.last_failure = now
        if record.failures >= self.limit:
            record.blocked_until = now + min(self.max_block_s, 2.0 ** (record.failures - self.limit))
        self._records[address] = record
        while len(self._records) > MAX_ADDRESSES:
            self._records.popitem(last=False)
        return record

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)


def _presents_credentials(scope: Scope) -> bool:
    """A bearer token, or the login form: what a guesser sends. (A stale gallery cookie is no guess.)"""
    if scope["method"] == "POST" and scope["path"] == "/login":
        return True
    return any(name == b"authorization" for name, _ in scope["headers"])


class AuthThrottle:
    """ASGI middleware: watches every answer to a request with credentials; 401 is a failure."""

    def __init__(self, app: ASGIApp, tracker: FailedAuthTracker) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _presents_credentials(scope):
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.tracker.retry_after(address)
        if wait > 0:
            seconds = math.ceil(wait)
            await JSONResponse(
                {"error": "too_many_failed_attempts",
                 "error_description": f"Too many failed authentication attempts; retry in {seconds} s."},
                status_code=429, headers={"Retry-After": str(seconds)})(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 401:
            record = self.tracker.failed(address)
            blocked = self.tracker.retry_after(address)
            kind = "login form" if scope["path"] == "/login" else _scheme(scope)
            logger.warning("authentication failed", extra={
                "client": address, "method": scope["method"], "path": scope["path"], "credential": kind,
                "failures": record.failures, "blocked_s": round(blocked, 1)})
        elif status != 0 and status < 400:
            self.tracker.succeeded(address)


def _scheme(scope: Scope) -> str:
    """The credential's scheme only (for the log): the token itself is never written anywhere."""
    value = Headers(scope=scope).get("authorization", "")
    scheme = value.split(" ", 1)[0][:16]
    return f"{scheme} token" if scheme else "empty authorization header"
