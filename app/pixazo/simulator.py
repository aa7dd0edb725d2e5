"""A Pixazo gateway simulator: a real HTTP server on loopback that renders real PNGs.

Used by the tests, `pixazo-mcp serve --demo` and the benchmark. It speaks the SDXL endpoint's shape
as described in `app.pixazo.client` and can be told to misbehave (see `Fault`), either in-process or over
its control routes (`POST /_sim/faults`, `GET /_sim/stats`, `POST /_sim/reset`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import itertools
import json
import random
import re
import struct
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageChops

from app.pixazo.gateway import KEY_HEADER, SDXL_PATH

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
    big_bytes_sent: int = 0
    # The latest requests only: a demo server or a benchmark runs the simulator for a long time.
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    headers: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "completed": self.completed, "aborted": self.aborted}


# Real SDXL PNGs are 1.3-2 MB at 1024x1024: gradients under coarse noise, upscaled so PNG's filters
# find some structure but zlib cannot flatten it, give about 1.6 MB at that size.
VARIANTS = 3  # distinct renders per size; a request picks one from its prompt and seed
NOISE_SCALE = 8
NOISE_SIGMA = 40
MIN_SIDE, MAX_SIDE = 16, 2048  # what the image route agrees to render
IMAGE_NAME = re.compile(r"([0-9]{1,12})-([0-9]{2,4})x([0-9]{2,4})-([0-9])\.png")
_render_lock = threading.Lock()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


IEND = png_chunk(b"IEND", b"")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=16)
def _render(width: int, height: int, variant: int) -> bytes:
    """One real-size, real-entropy PNG without its IEND chunk (about 1 s of CPU at 1024x1024)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    planes = [gradient, gradient.transpose(Image.Transpose.TRANSPOSE).resize((width, height)), radial]
    planes = planes[variant % 3:] + planes[:variant % 3]
    base = Image.merge("RGB", planes)
    small = (max(1, width // NOISE_SCALE), max(1, height // NOISE_SCALE))
    noise = Image.merge("RGB", [
        Image.effect_noise(small, NOISE_SIGMA).resize((width, height), Image.Resampling.BILINEAR) for _ in range(3)])
    img = ImageChops.add(base, noise, scale=1.0, offset=-128)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    data = out.getvalue()
    if not data.endswith(IEND):  # pragma: no cover - Pillow always ends a PNG with IEND
        raise ValueError("Pillow wrote a PNG without IEND")
    return data[: -len(IEND)]


def rendered(width: int, height: int, variant: int) -> bytes:
    """The cached render (made once per size and variant, under a lock so a crowd waits for one)."""
    with _render_lock:
        return _render(width, height, variant)


def variant_of(prompt: str, seed: int) -> int:
    return hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[0] % VARIANTS


def text_chunk(text: str) -> bytes:
    """A PNG tEXt chunk: what makes every served image distinct at the cost of a few bytes."""
    return png_chunk(b"tEXt", b"Comment\0" + text.encode("latin-1", "replace"))


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A whole real-size PNG for this prompt and seed (the simulator serves the same shape)."""
    return rendered(width, height, variant_of(prompt, seed)) + text_chunk(f"{prompt}|{seed}") + IEND


@functools.lru_cache(maxsize=2)
def huge_png(side: int) -> bytes:
    """A flat side x side RGB PNG of about 440 KB at 12000 px, which a decoder would expand to 432 MB:
    a decompression bomb for download tests, made in a fraction of a second without the pixels.

    One band of rows is deflated once and ended with a full flush, which resets the compressor, so
    the same bytes can simply repeat; the zlib trailer's Adler-32 still covers every row."""
    rows_per_band = 100
    band = (b"\0" + b"\x80" * (side * 3)) * rows_per_band
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib header is written below
    packed = deflate.compress(band) + deflate.flush(zlib.Z_FULL_FLUSH)
    bands, rest = divmod(side, rows_per_band)
    checksum = 1
    for _ in range(bands):
        checksum = zlib.adler32(band, checksum)
    tail = b""
    if rest:
        tail_rows = band[: rest * (side * 3 + 1)]
        tail = deflate.compress(tail_rows) + deflate.flush(zlib.Z_FULL_FLUSH)
        checksum = zlib.adler32(tail_rows, checksum)
    # 78 DA: zlib header (deflate, best compression); 03 00: an empty final block.
    idat = b"\x78\xda" + packed * bands + tail + b"\x03\x00" + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + IEND


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
        self.app.router.add_get("/_sim/huge.png", self._huge)
        self.app.router.add_get("/_sim/cut.png", self._cut)
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

        # The name says everything the image route needs, so the simulator keeps no image per request.
        width, height = _side(body.get("width")), _side(body.get("height"))
        variant = variant_of(body["prompt"], int(body.get("seed", 42)))
        name = f"{next(self._ids)}-{width}x{height}-{variant}.png"
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

    async def warm(self, width: int = 1024, height: int = 1024) -> None:
        """Render every variant of a size now (about 1 s of CPU each at 1024²), so that a measurement
        that follows does not include the simulator's one-off work."""
        for variant in range(VARIANTS):
            await asyncio.to_thread(rendered, width, height, variant)

    def image_bytes(self, url_or_name: str) -> bytes:
        """The exact bytes the image route serves for this URL or name (tests compare against them)."""
        name = url_or_name.rsplit("/", 1)[-1]
        match = IMAGE_NAME.fullmatch(name)
        if match is None:
            raise KeyError(name)
        width, height, variant = int(match[2]), int(match[3]), int(match[4])
        return rendered(width, height, variant) + text_chunk(f"pixazo-sim {name}") + IEND

    async def _image(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        match = IMAGE_NAME.fullmatch(name)
        if match is None or not all(MIN_SIDE <= int(match[i]) <= MAX_SIDE for i in (2, 3)):
            return web.Response(status=404, text="not found")
        width, height, variant = int(match[2]), int(match[3]), int(match[4])
        # A first request for a size renders it off the loop; every later one only sends cached bytes.
        head = await asyncio.to_thread(rendered, width, height, variant)
        tail = text_chunk(f"pixazo-sim {name}") + IEND
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(head) + len(tail)
        await resp.prepare(request)
        await resp.write(head)
        await resp.write(tail)
        await resp.write_eof()
        return resp

    async def _huge(self, request: web.Request) -> web.Response:
        side = min(int(request.query.get("side", "12000")), 30000)
        return web.Response(body=await asyncio.to_thread(huge_png, side), content_type="image/png")

    async def _html_as_png(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>Access denied</body></html>", content_type="image/png")

    async def _slow_image(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "5")))
        return web.Response(status=404, text="gone")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _big(self, request: web.Request) -> web.StreamResponse:
        """A PNG of `bytes` bytes (a valid 1024x1024 header, then filler), sent chunked (no
        Content-Length) so only a streaming cap can stop it. `stats.big_bytes_sent` says how far it got."""
        size = int(request.query.get("bytes", "1000000"))
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        head = PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1024, 1024, 8, 2, 0, 0, 0))
        chunk = head + b"\0" * (65536 - len(head))
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            await resp.write(part)
            sent += len(part)
            self.stats.big_bytes_sent += len(part)
            chunk = b"\0" * 65536
        await resp.write_eof()
        return resp

    async def _cut(self, request: web.Request) -> web.Response:
        """A real 1024x1024 PNG without its last `drop` bytes (a download cut short)."""
        drop = int(request.query.get("drop", "12"))
        data = await asyncio.to_thread(rendered, 1024, 1024, 0)
        return web.Response(body=(data + text_chunk("cut") + IEND)[:-drop], content_type="image/png")

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


def _side(value: Any) -> int:
    """A requested width or height as the image route will render it (the client validated it)."""
    try:
        side = int(value) if value is not None else 1024
    except (TypeError, ValueError):
        side = 1024
    return min(MAX_SIDE, max(MIN_SIDE, side))


async def serve_forever(host: str, port: int, latency: float, api_key: str | None) -> None:
    sim = await Simulator(latency=latency, api_key=api_key, host=host, port=port).start()
    print(f"Pixazo simulator on {sim.url}{SDXL_PATH}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
