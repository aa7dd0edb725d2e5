"""Limits on what a client may make the server hold before it has authenticated: time and bytes for a
request's head, and the body of every POST that is not MCP (the login form).

uvicorn bounds neither the time a client takes to send its headers nor their size (with httptools),
so `guarded_protocol` builds its HTTP protocol with both; `FormBodyLimit` is ASGI middleware.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

# Paths whose POST bodies are MCP messages: the SDK reads and caps them (4 MiB) after authentication.
MCP_PATHS = ("/mcp", "/messages/")
# Paths whose bodies are images, read and capped by their route as they stream (app.web.uploads).
IMAGE_PATHS = ("/upload/",)
FORM_TYPE = "application/x-www-form-urlencoded"
# OAuth dynamic client registration takes JSON (RFC 7591); every other non-MCP POST takes a form.
JSON_PATHS = ("/register",)


LINGER_S = 2.0  # how long a refused request's unread body is read and dropped before the close
LINGER_BYTES = 1024 * 1024  # and at most this much of it


class _LingeringClose:
    """The connection's transport as uvicorn sees it, except `close` while a request body is still
    arriving: the answer (a 413, a 401 ...) is sent, then the write side is shut (FIN) and what the
    client still sends is read and dropped for at most LINGER_S and LINGER_BYTES before the real close.
    Closing a socket with unread data makes the kernel send a reset, and the client loses the answer
    it had not read yet (a "lingering close", as web servers do)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedProtocol) -> None:
        self.raw = transport
        self._protocol = protocol
        self.lingering = False
        self.dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def is_closing(self) -> bool:
        return self.lingering or self.raw.is_closing()

    def close(self) -> None:
        cycle = self._protocol.cycle
        if self.lingering or self.raw.is_closing() or cycle is None or not cycle.more_body:
            self.finish()
            return
        self.lingering = True
        self._protocol.flow.resume_reading()  # uvicorn may have paused reading a body nobody reads
        try:
            self.raw.write_eof()  # after what is buffered: the answer, then FIN
        except (OSError, RuntimeError, NotImplementedError):  # pragma: no cover - a TLS transport
            self.finish()
            return
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, self.finish)

    def drop(self, data: bytes) -> None:
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            self.finish()

    def finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.raw.close()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request's head.

    The clock starts when the connection opens (and again when a kept-alive connection starts its
    next request); a client that has not finished its headers in time gets 408 and is closed.
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._closer = _LingeringClose(transport, self)
        self.transport = self._closer  # type: ignore[assignment]  # every close goes through it
        self._head_bytes = 0
        self._tail = b""
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_bytes, self._tail = 0, b""
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            logger.info("closed a connection that sent no complete request head in %.0f s",
                        self.header_timeout_s, extra={"client": self.client[0] if self.client else None})
            self._refuse(408, "request head not received in time")

    def _refuse(self, status: int, text: str) -> None:
        reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
        body = text.encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._closer.finish()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closer.lingering:  # the rest of a refused body: read and dropped
            self._closer.drop(data)
            return
        if self._head_timer is not None:
            allowance = self.max_header_bytes - self._head_bytes
            # Over the allowance only if the head has not ended within it (the same chunk may carry
            # a body after a small head). _tail catches a terminator split between two chunks.
            if len(data) > allowance and b"\r\n\r\n" not in self._tail + data[:max(allowance, 0)]:
                self._disarm_head_timer()
                logger.info("refused a request head over %d bytes", self.max_header_bytes,
                            extra={"client": self.client[0] if self.client else None})
                self._refuse(431, "request head too large")
                return
            self._head_bytes += len(data)
            self._tail = data[-3:]
        super().data_received(data)

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # The answer went out before the body was read (a refusal: 401, 413, 421 ...). Waiting for
            # the rest of a body nobody reads would let a client hold the connection: close it.
            self.transport.close()
        super().on_response_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()


def guarded_protocol(header_timeout_s: float, max_header_bytes: int) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type("GuardedProtocol", (GuardedProtocol,), {
        "header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes})


class FormBodyLimit:
    """Every POST that is not MCP carries at most a small urlencoded form (JSON on /register), read
    within a deadline.

    Anything else is refused before its body is read: another type gets 415, a declared length over
    the cap 413; a body that grows past the cap while read gets 413, one that trickles 408. The body
    is read here (it is small) and handed on whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") \
                or scope["path"].startswith(MCP_PATHS + IMAGE_PATHS):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        has_body = headers.get("transfer-encoding") is not None or (length is not None and length != "0")
        accepted = "application/json" if scope["path"] in JSON_PATHS else FORM_TYPE
        if has_body and headers.get("content-type", "").split(";")[0].strip().lower() != accepted:
            # Connection: close, so that the body it declared is never read.
            await PlainTextResponse(f"only {accepted} is accepted here", status_code=415,
                                    headers={"Connection": "close"})(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_bytes:
                        await self._too_large(scope, receive, send)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await PlainTextResponse("request body not received in time", status_code=408,
                                    headers={"Connection": "close"})(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(f"request body over {self.max_bytes} bytes", status_code=413,
                                headers={"Connection": "close"})(scope, receive, send)


_BEARER = re.compile(rb"bearer[ \t]+([^ \t]+)[ \t]*", re.IGNORECASE)


class NormalizeBearer:
    """One whitespace rule for bearer tokens on every route: whitespace around the token is dropped.

    The SDK (on /mcp) took everything after "Bearer " as the token while our own routes stripped it,
    so "Bearer  <token>" opened the gallery and was refused on /mcp. Rewriting the header once, here,
    gives the SDK, our routes, team and OAuth tokens the same rule.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            for i, (name, value) in enumerate(headers):
                if name == b"authorization" and (match := _BEARER.fullmatch(value.strip(b" \t"))):
                    normal = b"Bearer " + match.group(1)
                    if normal != value:
                        scope = {**scope, "headers": [*headers[:i], (name, normal), *headers[i + 1:]]}
                    break
        await self.app(scope, receive, send)


class UniqueVary:
    """Each name once in a response's Vary header: a route names what it varies on (Authorization,
    Cookie), and Starlette's session middleware adds Cookie again when the session was touched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def unique(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                varies = [value for name, value in headers if name.lower() == b"vary"]
                if varies:
                    names: dict[bytes, bytes] = {}
                    for value in varies:
                        for item in value.split(b","):
                            if item.strip():
                                names.setdefault(item.strip().lower(), item.strip())
                    kept = [(n, v) for n, v in headers if n.lower() != b"vary"]
                    message = {**message, "headers": [*kept, (b"vary", b", ".join(names.values()))]}
            await send(message)

        await self.app(scope, receive, unique)
