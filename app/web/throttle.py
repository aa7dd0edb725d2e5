"""Failed authentication: every failure is logged (never the token), and a client address that keeps
failing is slowed down, on every route that checks credentials (bearer tokens and the /login form).

The rule: after PIXAZO_AUTH_FAILURE_LIMIT failures in a row from one address, each further failure
blocks that address for twice as long as the one before (1 s, 2 s, 4 s ... up to
PIXAZO_AUTH_BLOCK_MAX_S). While blocked, a request from that address that presents a guessable
credential (a team token, the /login form, the OAuth sign-in page's token) is answered 429 with
Retry-After without checking it, even a valid one: otherwise the block would not slow guessing.

What is not a guess is kept out of it, so that one person's mistakes do not lock out everyone behind a
shared egress address (Claude.ai and ChatGPT call from a few):
- an OAuth access token in this server's format (`pxa_` and 256 random bits) cannot be guessed: it
  is checked even from a blocked address, and a refused one is logged but never counted;
- a token this server issued that has expired or was revoked is not counted (app.identity.attempts).
A failure is a 401, or a check that says so (app.identity.attempts.failed); only a credential that
was actually verified clears the address (any answer below 400 once did: `/healthz` answers every
bearer 200, so a guesser reset its own count). The address is the one uvicorn reports, an IPv6
address counted by its /64: behind a proxy, list it in FORWARDED_ALLOW_IPS so that X-Forwarded-For
gives each client its own.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.identity import attempts
from app.identity.oauth import ACCESS_PREFIX, SIGNIN_PATH
from app.identity.signin import SSO_CALLBACK_PATH

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


FORM_PATHS = ("/login", SIGNIN_PATH)  # forms that take a team token
ISSUED_TOKEN = re.compile(rb"Bearer " + re.escape(ACCESS_PREFIX.encode()) + rb"[A-Za-z0-9_-]{43}")


def _presents_credentials(scope: Scope) -> bool:
    """A bearer token, a form that takes a token, or the single sign-on's answer: what a guesser sends.
    (A stale gallery cookie is no guess.)"""
    if scope["method"] == "POST" and scope["path"] in FORM_PATHS:
        return True
    if scope["path"] == SSO_CALLBACK_PATH:
        return True
    return any(name == b"authorization" for name, _ in scope["headers"])


def _unguessable(scope: Scope) -> bool:
    """An access token in the shape this server issues (256 random bits): trying them is no guessing."""
    return any(name == b"authorization" and ISSUED_TOKEN.fullmatch(value) for name, value in scope["headers"])


class AuthThrottle:
    """ASGI middleware: watches every answer to a request with credentials; 401 is a failure."""

    def __init__(self, app: ASGIApp, tracker: FailedAuthTracker) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _presents_credentials(scope):
            await self.app(scope, receive, send)
            return
        address = attempts.client_key(scope["client"][0]) if scope.get("client") else "unknown"
        unguessable = _unguessable(scope)
        wait = 0.0 if unguessable else self.tracker.retry_after(address)
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

        attempt = attempts.begin()
        await self.app(scope, receive, watch)
        if attempt.verified:
            self.tracker.succeeded(address)
        elif status == 401 or attempt.failed:
            kind = {"/login": "login form", SIGNIN_PATH: "sign-in form", SSO_CALLBACK_PATH: "single sign-on"}.get(
                scope["path"]) or _scheme(scope)
            fields = {"client": address, "method": scope["method"], "path": scope["path"], "credential": kind}
            if attempt.stale or unguessable:
                logger.info("authentication failed: %s", "an expired or revoked token" if attempt.stale
                            else "an unknown access token", extra={**fields, "counted": False})
                return
            record = self.tracker.failed(address)
            blocked = self.tracker.retry_after(address)
            logger.warning("authentication failed", extra={
                **fields, "failures": record.failures, "blocked_s": round(blocked, 1)})


def _scheme(scope: Scope) -> str:
    """The credential's scheme only (for the log): the token itself is never written anywhere."""
    value = Headers(scope=scope).get("authorization", "")
    scheme = value.split(" ", 1)[0][:16]
    return f"{scheme} token" if scheme else "empty authorization header"
