"""Graceful shutdown: on SIGTERM stop accepting, let calls in flight finish and deliver their answers.

A plain uvicorn shutdown keeps the rows but loses the answers: sse-starlette (under the SDK's
streamable HTTP transport) closes every SSE stream the moment the signal arrives, so a caller whose
generation finishes a second later never hears of it. Here the automatic drain is switched off; the
streams are closed only once no call is in flight (or the grace period is over).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.protocol.server import Runtime
from app.settings import Settings
from app.web.guards import guarded_protocol

logger = logging.getLogger(__name__)

# POSTs on these paths carry tool calls (their answers stream back on the same response).
CALL_PATHS = ("/mcp", "/messages/")


class InFlightRequests:
    """ASGI middleware counting POST requests on the MCP transports until their response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in CALL_PATHS:
            await self.app(scope, receive, send)
            return
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


class GracefulServer(uvicorn.Server):
    """uvicorn with a drain step between the signal and the closing of the SSE streams."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, requests: InFlightRequests,
                 grace_s: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.requests = requests
        self.grace_s = grace_s
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]  # untyped library

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        # Only now is the port bound: "ready" before this would send a probe to a closed port.
        if self.started:
            logger.info("pixazo-mcp %s ready on %s:%d", __version__, self.config.host, self.config.port)

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain)
        elif self.force_exit:
            AppStatus.should_exit = True

    def _start_drain(self) -> None:
        # Keep a reference: the loop holds tasks only weakly.
        self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> None:
        state = self.runtime.state
        deadline = time.monotonic() + self.grace_s
        if state is not None:
            state.service.draining = True
            # Calls in the background have no connection that would hold uvicorn back: the lifespan's
            # end waits for them until the same deadline (app.core.background).
            state.service.drain_deadline = deadline
        logger.info("shutting down: waiting up to %.0f s for calls in flight", self.grace_s)
        while time.monotonic() < deadline:
            calls = state.service.in_flight if state is not None else 0
            if calls == 0 and self.requests.count == 0:
                break
            await asyncio.sleep(0.05)
        else:
            logger.warning("grace period over with calls still in flight; they end INTERRUPTED")
        # The legacy SSE transport sends a result on its GET stream just after the handler returns.
        await asyncio.sleep(0.3)
        AppStatus.should_exit = True


def run(app: Any, runtime: Runtime, requests: InFlightRequests, settings: Settings) -> None:
    grace_s = settings.shutdown_grace_s
    # log_config=None: uvicorn logs through our handlers (JSON lines, secrets scrubbed).
    # http=: headers must arrive in time and within a size (uvicorn bounds neither);
    # limit_concurrency: over it uvicorn answers 503 instead of holding more.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            log_config=None, timeout_graceful_shutdown=max(1, round(grace_s + 5)), lifespan="on",
                            http=guarded_protocol(settings.header_timeout_s, settings.max_header_bytes),
                            limit_concurrency=settings.max_connections)
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default handlers
    # that kills the interpreter before atexit runs (no coverage data, no flushed buffers). These
    # handlers turn it into an ordinary exit with the conventional status instead (143, 130).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_with_status)
    GracefulServer(config, runtime, requests, grace_s).run()


def _exit_with_status(sig: int, frame: Any) -> None:
    raise SystemExit(128 + sig)
