"""Caps on what a caller can keep open on the server: legacy `/mcp` sessions and legacy `/sse` streams,
counted together, per caller (PIXAZO_MAX_SESSIONS_PER_CALLER) and in all (PIXAZO_MAX_SESSIONS).

2026-07-28 requests are sessionless and are never counted. Over a cap, the request that would open one
more is refused before it reaches the SDK: 429 over the caller's cap, 503 over the total, with a
JSON-RPC error body saying which and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

# Who a request speaks for: the team caller of its token, else None (an unknown or OAuth token).
CallerOf = Callable[[str | None], Awaitable[str | None]]
# Whether the SDK still holds a legacy session (it ends them on DELETE and after their idle timeout).
SessionAlive = Callable[[str], bool]


def _refusal(message: str, status: int) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": message}},
                        status_code=status)


class SessionCaps:
    """ASGI middleware in front of the MCP transports."""

    def __init__(self, app: ASGIApp, caller_of: CallerOf, alive: SessionAlive, per_caller: int,
                 total: int, auth_required: bool) -> None:
        self.app = app
        self.caller_of = caller_of
        self.alive = alive
        self.per_caller = per_caller
        self.total = total
        self.auth_required = auth_required
        self._sessions: dict[str, str] = {}  # legacy /mcp session id -> caller key
        self._streams: dict[str, int] = {}  # caller key -> /sse streams open
        self._opening: dict[str, int] = {}  # caller key -> opening requests in flight (not yet recorded)

    async def _key(self, headers: Headers) -> str | None:
        """The caller to count against; None lets the request through uncounted (the SDK answers 401)."""
        authorization = headers.get("authorization")
        if not authorization:
            return None if self.auth_required else "anonymous"
        caller = await self.caller_of(authorization)
        if caller is not None:
            return caller
        # Not a team token (an OAuth token, or a wrong one the SDK will refuse): count per token.
        return "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]

    def open_count(self, key: str) -> tuple[int, int]:
        """(open for this caller, open in all), forgetting sessions the SDK has ended."""
        for session_id in [s for s in self._sessions if not self.alive(s)]:
            del self._sessions[session_id]
        mine = sum(1 for k in self._sessions.values() if k == key) + self._streams.get(key, 0) \
            + self._opening.get(key, 0)
        return mine, len(self._sessions) + sum(self._streams.values()) + sum(self._opening.values())

    def _over(self, key: str) -> JSONResponse | None:
        mine, everyone = self.open_count(key)
        if mine >= self.per_caller:
            logger.warning("refused a session: caller at its cap", extra={"caller": key, "open": mine})
            return _refusal(f"Too many open MCP sessions and SSE streams for this caller (limit "
                            f"{self.per_caller}): close one (DELETE /mcp, or end the stream) or let one expire.",
                            429)
        if everyone >= self.total:
            logger.warning("refused a session: server at its cap", extra={"open": everyone})
            return _refusal(f"The server has {self.total} MCP sessions and SSE streams open, its limit: "
                            "try again later.", 503)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        headers = Headers(scope=scope)
        if path == "/sse" and method == "GET":
            await self._stream(scope, receive, send, headers)
        elif path == "/mcp" and method == "POST" and "mcp-session-id" not in headers and \
                headers.get("mcp-protocol-version", HANDSHAKE_PROTOCOL_VERSIONS[0]) in HANDSHAKE_PROTOCOL_VERSIONS:
            await self._open_session(scope, receive, send, headers)
        else:
            await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> str | None:
        """The caller's key when this stream or session counts against a cap and fits under it; None when
        the request was answered here (not counted: passed on; over a cap: refused)."""
        key = await self._key(headers)
        if key is None:
            await self.app(scope, receive, send)
            return None
        refusal = self._over(key)
        if refusal is not None:
            await refusal(scope, receive, send)
            return None
        return key

    async def _stream(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        key = await self._admit(scope, receive, send, headers)
        if key is None:
            return
        self._streams[key] = self._streams.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._streams[key] -= 1
            if not self._streams[key]:
                del self._streams[key]

    async def _open_session(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        key = await self._admit(scope, receive, send, headers)
        if key is None:
            return

        opening = True

        def opened() -> None:
            nonlocal opening
            if opening:
                opening = False
                self._opening[key] -= 1
                if not self._opening[key]:
                    del self._opening[key]

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                session_id = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if message["status"] < 400 and session_id:
                    self._sessions[session_id] = key  # from here on it counts as a session
                opened()
            await send(message)

        # Counted while it opens, so that a burst of opening requests cannot all slip under the cap.
        self._opening[key] = self._opening.get(key, 0) + 1
        try:
            await self.app(scope, receive, record)
        finally:
            opened()
