"""A Pixazo gateway simulator: a real HTTP server on loopback that renders real PNGs.

Used by the tests, `pixazo-mcp serve --demo` and the benchmark. It speaks the SDXL endpoint's shape
as described in `app.pixazo.client` and can be told to misbehave (see `Fault`), either in-process or over
its control routes (`POST /_sim/faults`, `GET /_sim/stats`, `POST /_sim/reset`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw

from app.pixazo.client import KEY_HEADER, SDXL_PATH

RECENT = 1000  # requests whose bodies and headers Stats keeps for inspection
FAULT_KINDS = ("http", "hang", "reset", "html", "truncated", "no_url", "slow", "url")


@dataclass
class Fault:
    """What the simulator does instead of answering normally, for one request.

    kind: http (status/body/headers), hang (never answers), reset (drops the connection),
    html (200 with an HTML page), truncated (200 with cut-off JSON), no_url (200 without imageUrl),
    slow (answers normally after `delay` seconds), url (200 with `body` as the imageUrl).
    """

    kind: str
    status: int = 500
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {data.get('kind')!r}")
        return cls(**data)


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    aborted: int = 0
    # The latest requests only: a demo server or a benchmark runs the simulator for a long time.
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    headers: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "completed": self.completed, "aborted": self.aborted}


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A small real PNG whose colours depend on the prompt and seed."""
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    w, h = max(16, width // 8), max(16, height // 8)
    img = Image.new("RGB", (w, h), tuple(digest[0:3]))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 6, h // 6, w - w // 6, h - h // 6), fill=tuple(digest[3:6]))
    draw.rectangle((w // 3, h // 3, w - w // 3, h - h // 3), fill=tuple(digest[6:9]))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class Simulator:
    """Owns the aiohttp app, the images it made, the fault queue and the counters."""

    def __init__(self, *, latency: float = 0.0, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, error_rates: dict[str, float] | None = None,
                 rng_seed: int | None = None) -> None:
        self.latency = latency
        self.api_key = api_key
        self.host = host
        self.port = port
        self.error_rates = dict(error_rates or {})
        self.faults: deque[Fault] = deque()
        self.images: dict[str, bytes] = {}
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._rng = random.Random(rng_seed)  # noqa: S311 - fault injection, not security
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_post(SDXL_PATH, self._generate)
        self.app.router.add_get("/images/{name}", self._image)
        # Misbehaving image hosts, for download tests (point a "url" fault at them).
        self.app.router.add_get("/_sim/html.png", self._html_as_png)
        self.app.router.add_get("/_sim/redirect", self._redirect)
        self.app.router.add_get("/_sim/big.png", self._big)
        self.app.router.add_get("/_sim/slow.png", self._slow_image)
        self.app.router.add_post("/_sim/faults", self._set_faults)
        self.app.router.add_post("/_sim/reset", self._reset)
        self.app.router.add_get("/_sim/stats", self._stats)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Simulator:
        # handler_cancellation: a client that aborts its request cancels the handler, which the
        # cancellation tests count (stats.aborted).
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=2048)
        await site.start()
        if self.port == 0:
            # TCPSite keeps no public handle on the bound socket; the runner's addresses have it.
            self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def push(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        roll = self._rng.random()
        for kind, rate in self.error_rates.items():
            if roll < rate:
                if kind in FAULT_KINDS:
                    return Fault(kind=kind, status=503)
                return Fault(kind="http", status=int(kind))
            roll -= rate
        return None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._answer(request)
            stats.completed += 1
            return response
        except asyncio.CancelledError:
            stats.aborted += 1
            raise
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.stats.headers.append({k: v for k, v in request.headers.items() if k != KEY_HEADER})
        key = request.headers.get(KEY_HEADER)
        if not key or (self.api_key is not None and key != self.api_key):
            return web.json_response(
                {"statusCode": 401, "message": "Access denied due to invalid subscription key."}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "Invalid JSON body"}, status=400)
        self.stats.bodies.append(body if isinstance(body, dict) else {})
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return web.json_response({"error": "prompt is required"}, status=400)

        fault = self._next_fault()
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(3600)
        delay = fault.delay if fault is not None and fault.kind == "slow" else self.latency
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.kind not in ("slow",):
            return await self._misbehave(request, fault)

        name = f"{next(self._ids)}-{hashlib.sha1(body['prompt'].encode()).hexdigest()[:8]}.png"  # noqa: S324 - a name, not security
        self.images[name] = render_png(body["prompt"], int(body.get("seed", 42)),
                                       int(body.get("width", 1024)), int(body.get("height", 1024)))
        return web.json_response({"imageUrl": f"{self.url}/images/{name}"})

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "http":
            body = fault.body if fault.body is not None else json.dumps({"error": "Simulated failure"})
            ctype = "application/json" if body.lstrip().startswith("{") else "text/plain"
            return web.Response(status=fault.status, text=body, headers=fault.headers, content_type=ctype)
        if fault.kind == "html":
            return web.Response(text="<html><body>Service temporarily unavailable</body></html>",
                                content_type="text/html")
        if fault.kind == "truncated":
            return web.Response(text='{"imageUrl": "https://pub-x.r2.dev/ab', content_type="application/json")
        if fault.kind == "no_url":
            return web.json_response({"status": "ok"})
        if fault.kind == "url":
            return web.json_response({"imageUrl": fault.body})
        # reset: drop the connection without an answer
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    async def _image(self, request: web.Request) -> web.Response:
        data = self.images.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=data, content_type="image/png")

    async def _html_as_png(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>Access denied</body></html>", content_type="image/png")

    async def _slow_image(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "5")))
        return web.Response(status=404, text="gone")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _big(self, request: web.Request) -> web.StreamResponse:
        """A PNG-looking body of `bytes` bytes, sent chunked (no Content-Length) so only a streaming
        cap can stop it."""
        size = int(request.query.get("bytes", "1000000"))
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\x89PNG\r\n\x1a\n" + b"\0" * 65528
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    async def _set_faults(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.push(*(Fault.from_json(item) for item in payload.get("faults", [])))
        if "latency" in payload:
            self.latency = float(payload["latency"])
        if "error_rates" in payload:
            self.error_rates = {str(k): float(v) for k, v in payload["error_rates"].items()}
        return web.json_response({"queued": len(self.faults)})

    async def _reset(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.stats = Stats()
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())


async def serve_forever(host: str, port: int, latency: float, api_key: str | None) -> None:
    sim = await Simulator(latency=latency, api_key=api_key, host=host, port=port).start()
    print(f"Pixazo simulator on {sim.url}{SDXL_PATH}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
