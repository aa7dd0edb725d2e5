"""A Pixazo gateway simulator: a real HTTP server on loopback that renders real PNGs.

Used by the tests, `pixazo-mcp serve --demo` and the benchmark. It serves every endpoint of the
catalogue in `app.pixazo.gateway` (paths, wire field names, limits and answer kinds all come from
there, so correcting a fact in the gateway corrects the simulator too):

- sync models answer the image URL at once (`imageUrl`; FLUX `output`);
- queue models answer 202 `{request_id, status: "QUEUED", polling_url}`, and the job is then reported
  by `GET /v2/requests/status/{id}`: QUEUED, PROCESSING, then COMPLETED with `output.media_url`.
  A job ends after `queue_polls_before_done` pending polls AND `queue_seconds` since it was submitted
  (both per simulator; `JobFault` changes one job). Jobs live in the simulator, not in a connection,
  so a restarted client can keep polling the same job;
- bodies are checked against the catalogue like the live gateway does: a field the model does not take
  answers 500 with the plain text `Error processing request` (seen live); a missing prompt or image,
  or a value out of range, 400 `{"error": ...}`;
- editing models fetch their input URLs themselves (as Pixazo does; `Stats.fetches` records each
  fetch): an input that cannot be fetched or is not an image fails the job (sync: 400). Results are
  real PNGs sized from the input (upscale x scale, outpaint x (1 + zoom/100), RGBA for background
  removal), each side capped at MAX_SIDE.

It can be told to misbehave, in-process (`push(Fault | JobFault)`, `finish`) or over its control
routes (`POST /_sim/faults`, `GET /_sim/stats`, `GET /_sim/jobs`, `POST /_sim/jobs/{id}`,
`POST /_sim/reset`); `release()` ends the drawing time of the sync requests in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import struct
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from app.errors import DownloadError
from app.pixazo.gateway import (
    CATALOGUE,
    COMPLETED,
    ERROR,
    FAILED,
    KEY_HEADER,
    PROCESSING,
    QUEUED,
    STATUS_PATH,
    TERMINAL_STATES,
    UNKNOWN_FIELD_STATUS,
    UNKNOWN_FIELD_TEXT,
    Endpoint,
)
from app.pixazo.renders import (
    IEND,
    IMAGE_NAME,
    MAX_SIDE,
    MIN_SIDE,
    PNG_SIGNATURE,
    VARIANTS,
    fit,
    huge_png,
    png_chunk,
    rendered,
    side_of,
    text_chunk,
    variant_of,
)
from app.pixazo.renders import render_png as render_png  # re-exported: tests draw what the route serves
from app.storage.imagetype import MAX_HEADER_BYTES, sniff

RECENT = 1000  # requests whose bodies and headers Stats keeps for inspection
MAX_JOBS = 10_000  # queue jobs kept (oldest forgotten first): a demo server runs for a long time
FAULT_KINDS = ("http", "hang", "reset", "html", "truncated", "no_url", "slow", "url")
FAULT_ROUTES = ("submit", "status")
JOB_ENDS = (COMPLETED, FAILED, ERROR, PROCESSING)  # PROCESSING: the job never ends by itself
FETCH_LIMIT = 50 * 1024 * 1024  # bytes of an input image the simulator reads before giving up


@dataclass
class Fault:
    """What the simulator does instead of answering normally, for one request.

    kind: http (status/body/headers), hang (never answers), reset (drops the connection),
    html (200 with an HTML page), truncated (200 with cut-off JSON), no_url (200 without imageUrl),
    slow (answers normally after `delay` seconds), url (200 with `body` as the image URL; on a queue
    model, the job completes with `body` as its image).
    route: "submit" (the next POST to any model) or "status" (the next job status poll).
    """

    kind: str
    status: int = 500
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    route: str = "submit"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {data.get('kind')!r}")
        if data.get("route", "submit") not in FAULT_ROUTES:
            raise ValueError(f"unknown fault route {data.get('route')!r}")
        return cls(**data)


@dataclass
class JobFault:
    """How the next queue job ends: `state` FAILED or ERROR (with `error`), PROCESSING (never ends
    until `Simulator.finish`), or COMPLETED with its own timing (`polls`, `seconds`)."""

    state: str = FAILED
    error: str = "Simulated job failure"
    polls: int | None = None  # pending polls before it ends; None: the simulator's
    seconds: float | None = None  # seconds after submission before it ends; None: the simulator's

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobFault:
        if data.get("state", FAILED) not in JOB_ENDS:
            raise ValueError(f"unknown job end {data.get('state')!r}")
        return cls(**data)


@dataclass
class Job:
    """One queue job, as the status route reports it."""

    request_id: str
    endpoint: Endpoint
    end: str  # the state it ends in
    error: str | None
    image_url: str | None
    polls_before_done: int
    ready_at: float  # monotonic time before which it stays pending
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None
    state: str = QUEUED
    polls: int = 0

    def advance(self) -> None:
        """One poll: the job moves on by the polls it has seen and the time that has passed."""
        self.polls += 1
        if self.state in TERMINAL_STATES:
            return
        before = self.state
        if (self.end != PROCESSING and self.polls > self.polls_before_done
                and time.monotonic() >= self.ready_at):
            self.settle(self.end, self.error)
            return
        self.state = QUEUED if self.polls <= 1 and self.end != PROCESSING else PROCESSING
        if self.state != before:
            self.updated_at = datetime.now(UTC)

    def settle(self, state: str, error: str | None) -> None:
        self.state, self.end = state, state
        if state in (FAILED, ERROR):
            self.error = error or "Simulated job failure"
        self.updated_at = datetime.now(UTC)
        if state in TERMINAL_STATES:
            self.completed_at = self.updated_at

    def as_json(self) -> dict[str, Any]:
        done = self.state == COMPLETED
        return {
            "request_id": self.request_id,
            "status": self.state,
            "model_id": self.endpoint.path.strip("/").split("/", 1)[0],
            "error": self.error if self.state in (FAILED, ERROR) else None,
            "output": {"media_url": [self.image_url], "media_type": "image/png"} if done else None,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "completed_at": _iso(self.completed_at) if self.completed_at else None,
        }


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


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
    # Every model and status request: {"method", "path", "body"} (body None for a poll).
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    # Each input image the simulator fetched: {"url", "status", "ok", "error", "width", "height"}.
    fetches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    polls: dict[str, int] = field(default_factory=dict)  # status polls per request id (unknown ids too)

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "completed": self.completed, "aborted": self.aborted, "calls": list(self.calls),
                "fetches": list(self.fetches), "polls": dict(self.polls)}


class RefusedError(Exception):
    """A request the gateway refuses: the HTTP answer to give."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad(message: str) -> RefusedError:
    return RefusedError(web.json_response({"error": message}, status=400))


def check_body(endpoint: Endpoint, body: Any) -> dict[str, Any]:
    """The body's values by wire name, or a RefusedError: the live quirk (plain-text 500) for a field the
    model does not take, 400 for a missing prompt or image or a value out of range."""
    if not isinstance(body, dict):
        raise _bad("Invalid JSON body")
    wires = {arg.wire: arg for arg in endpoint.args.values()}
    if any(name not in wires and name not in endpoint.fixed for name in body):
        raise RefusedError(web.Response(status=UNKNOWN_FIELD_STATUS, text=UNKNOWN_FIELD_TEXT,
                                        content_type="text/plain"))
    for wire, arg in wires.items():
        value = body.get(wire)
        if value is None or (wire == "prompt" and value == ""):
            if wire == "prompt" or arg.kind == "image":
                raise _bad(f"{wire} is required")
            continue
        if not arg.accepts(value):
            raise _bad(f"{wire} is invalid or out of range")
        if arg.kind == "image" and not value.startswith(("http://", "https://")):
            raise _bad(f"{wire} must be an http(s) URL")
    return dict(body)


class Simulator:
    """Owns the aiohttp app, the images it made, its queue jobs, the fault queues and the counters.

    Queue timing: a job reports QUEUED on its first poll, PROCESSING after, and ends once it has seen
    more than `queue_polls_before_done` polls and `queue_seconds` have passed since it was submitted
    (0 and 0: the first poll sees it done).
    """

    def __init__(self, *, latency: float = 0.0, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, error_rates: dict[str, float] | None = None,
                 rng_seed: int | None = None, queue_polls_before_done: int = 2, queue_seconds: float = 0.0,
                 fetch_timeout: float = 5.0, queued_models: tuple[str, ...] = (), look: str = "noise") -> None:
        self.latency = latency
        self.look = look  # what the image route serves (renders.LOOKS)
        self.api_key = api_key
        self.host = host
        self.port = port
        self.error_rates = dict(error_rates or {})
        self.queue_polls_before_done = queue_polls_before_done
        self.queue_seconds = queue_seconds
        self.fetch_timeout = fetch_timeout
        # Sync models (by catalogue name) that answer with a queue job instead of an image, as FLUX.1
        # schnell may (some 2026 clients poll its request id): the job completes with the drawn image.
        self.queued_models: set[str] = set(queued_models)
        self.faults: deque[Fault] = deque()  # for the next model requests (submits)
        self.status_faults: deque[Fault] = deque()  # for the next status polls
        self.job_faults: deque[JobFault] = deque()  # for the next queue jobs
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._release = asyncio.Event()  # set by release(): requests drawing now answer at once
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._rng = random.Random(rng_seed)  # noqa: S311 - fault injection, not security
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.app = web.Application()
        for endpoint in CATALOGUE.values():
            self.app.router.add_post(endpoint.path, self._model_route(endpoint))
        self.app.router.add_get(STATUS_PATH, self._status)
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
        self.app.router.add_get("/_sim/jobs", self._jobs)
        self.app.router.add_post("/_sim/jobs/{request_id}", self._finish)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Simulator:
        # Fetches input images the way Pixazo does: from wherever the URL points, loopback included.
        self._http = aiohttp.ClientSession()
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
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def push(self, *faults: Fault | JobFault) -> None:
        """Queue faults: a Fault for the next submit or status poll (its `route`), a JobFault for the
        next queue job."""
        for fault in faults:
            if isinstance(fault, JobFault):
                self.job_faults.append(fault)
            elif fault.route == "status":
                self.status_faults.append(fault)
            else:
                self.faults.append(fault)

    def finish(self, request_id: str, state: str = COMPLETED, error: str | None = None) -> Job:
        """End a job now (a stuck or slow one): its next poll reports `state`."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"a job ends COMPLETED, FAILED or ERROR, not {state!r}")
        job = self.jobs[request_id]
        job.settle(state, error)
        return job

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

    def _model_route(self, endpoint: Endpoint) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._counted(endpoint, request)
        return handle

    async def _counted(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._answer(endpoint, request)
            stats.completed += 1
            return response
        except asyncio.CancelledError:
            stats.aborted += 1
            raise
        finally:
            stats.in_flight -= 1

    def _authorised(self, request: web.Request) -> web.Response | None:
        """The gateway's refusal of a missing or wrong key (Azure API Management's shape), or None."""
        self.stats.headers.append({k: v for k, v in request.headers.items() if k != KEY_HEADER})
        key = request.headers.get(KEY_HEADER)
        if not key or (self.api_key is not None and key != self.api_key):
            return web.json_response(
                {"statusCode": 401, "message": "Access denied due to invalid subscription key."}, status=401)
        return None

    async def _answer(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            self.stats.calls.append({"method": request.method, "path": request.path, "body": None})
            return web.json_response({"error": "Invalid JSON body"}, status=400)
        self.stats.bodies.append(body if isinstance(body, dict) else {})
        self.stats.calls.append({"method": request.method, "path": request.path, "body": body})
        try:
            values = check_body(endpoint, body)
        except RefusedError as refusal:
            return refusal.response

        fault = self._next_fault()
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(3600)
        # Latency is the time a sync model takes to draw; a queue model answers its job id at once.
        delay = self.latency if endpoint.kind == "sync" else 0.0
        if fault is not None and fault.kind == "slow":
            delay = fault.delay
        if delay:
            await self._draw_time(delay)
        if fault is not None and fault.kind not in ("slow",):
            return await self._misbehave(request, fault, endpoint, values)
        if endpoint.kind == "queue":
            return await self._enqueue(endpoint, values)
        drawn = await self._draw(endpoint, values)
        if isinstance(drawn, web.Response):
            return drawn
        if endpoint.model in self.queued_models:
            return await self._enqueue(endpoint, values, image_url=drawn)
        return web.json_response({endpoint.answer_field: drawn})

    def _wire(self, endpoint: Endpoint, name: str) -> str | None:
        arg = endpoint.args.get(name)
        return arg.wire if arg is not None else None

    def _value(self, endpoint: Endpoint, values: dict[str, Any], name: str) -> Any:
        """A field's value by our argument name: what was sent, else the catalogue's default."""
        arg = endpoint.args.get(name)
        if arg is None:
            return None
        value = values.get(arg.wire)
        return arg.default if value is None else value

    def _name(self, width: int, height: int, variant: int = 0, alpha: bool = False) -> str:
        # The name says everything the image route needs, so the simulator keeps no image per request.
        return f"{next(self._ids)}-{width}x{height}-{variant}{'a' if alpha else ''}.png"

    async def _draw(self, endpoint: Endpoint, values: dict[str, Any]) -> str | web.Response:
        """A sync model's image URL: a generated image, or an inpainted one (after fetching its inputs);
        or the refusal to answer instead."""
        size: tuple[int, int] | None = None
        for arg in endpoint.args.values():
            if arg.kind == "image":
                got, problem = await self._fetch(values[arg.wire])
                if problem is not None:
                    return web.json_response({"error": f"could not fetch {arg.wire}: {problem}"}, status=400)
                size = size or got
        width, height = self._value(endpoint, values, "width"), self._value(endpoint, values, "height")
        if size is not None and (width is None or height is None):
            width, height = size
        prompt = str(self._value(endpoint, values, "prompt") or "")
        seed = self._value(endpoint, values, "seed")
        name = self._name(side_of(width), side_of(height), variant_of(prompt, int(seed if seed is not None else 42)))
        return f"{self.url}/images/{name}"

    async def _enqueue(self, endpoint: Endpoint, values: dict[str, Any], image_url: str | None = None) -> web.Response:
        """Accept a queue job: fetch its input first (an input Pixazo cannot fetch fails the job)."""
        size: tuple[int, int] | None = None
        problem: str | None = None
        for arg in endpoint.args.values():
            if arg.kind == "image" and problem is None:
                got, problem = await self._fetch(values[arg.wire])
                size = size or got
        plan = self.job_faults.popleft() if self.job_faults and problem is None else JobFault(state=COMPLETED)
        if problem is None and image_url is None:
            width, height = size or (1024, 1024)
            alpha = endpoint.operation == "remove_background"
            if endpoint.operation == "upscale":
                scale = float(self._value(endpoint, values, "scale") or 2)
                width, height = fit(width * scale, height * scale)
            elif endpoint.operation == "outpaint":
                grow = 1 + float(self._value(endpoint, values, "zoom_out_percentage") or 0) / 100
                width, height = fit(width * grow, height * grow)
            else:
                width, height = fit(width, height)
            image_url = f"{self.url}/images/{self._name(width, height, 0, alpha)}"
        polls = self.queue_polls_before_done if plan.polls is None else plan.polls
        seconds = self.queue_seconds if plan.seconds is None else plan.seconds
        job = Job(request_id=str(uuid.uuid4()), endpoint=endpoint,
                  end=FAILED if problem is not None else plan.state,
                  error=f"could not fetch image: {problem}" if problem is not None else plan.error,
                  image_url=image_url, polls_before_done=polls, ready_at=time.monotonic() + seconds)
        self.jobs[job.request_id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        return web.json_response({
            "request_id": job.request_id, "status": QUEUED,
            "polling_url": self.url + STATUS_PATH.format(request_id=job.request_id),
        }, status=202)

    async def _fetch(self, url: str) -> tuple[tuple[int, int] | None, str | None]:
        """Fetch an input image as Pixazo would: its size, or why it could not be used. Recorded in Stats."""
        record: dict[str, Any] = {"url": url, "status": None, "ok": False, "error": None, "width": None,
                                  "height": None}
        self.stats.fetches.append(record)
        if self._http is None:
            raise RuntimeError("the simulator is not started")
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=self.fetch_timeout),
                                      max_redirects=3) as resp:
                record["status"] = resp.status
                data = b""
                async for chunk in resp.content.iter_chunked(1 << 16):  # all of it, to one byte past the limit
                    data = (data + chunk)[:FETCH_LIMIT + 1]
                    if len(data) > FETCH_LIMIT:
                        break
                record["sha256"] = hashlib.sha256(data).hexdigest()  # what Pixazo received, byte for byte
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            record["error"] = f"{type(exc).__name__}"
            return None, record["error"]
        if record["status"] != 200:
            record["error"] = f"HTTP {record['status']}"
        elif len(data) > FETCH_LIMIT:
            record["error"] = "the image is too large"
        else:
            # The header only, without Pillow: its decompression-bomb guard is process-wide and set
            # by the server under test, and an input's size is all the simulator needs.
            try:
                header = sniff(data[:MAX_HEADER_BYTES])
            except DownloadError:
                header = None
            if header is None:
                record["error"] = "not an image"
            else:
                record["width"], record["height"] = header.width, header.height
        if record["error"] is not None:
            return None, record["error"]
        record["ok"] = True
        return (record["width"], record["height"]), None

    async def _status(self, request: web.Request) -> web.StreamResponse:
        """GET /v2/requests/status/{request_id}: one poll of a job (each poll moves it on)."""
        refused = self._authorised(request)
        if refused is not None:
            return refused
        request_id = request.match_info["request_id"]
        self.stats.calls.append({"method": request.method, "path": request.path, "body": None})
        self.stats.polls[request_id] = self.stats.polls.get(request_id, 0) + 1
        fault = self.status_faults.popleft() if self.status_faults else None
        if fault is not None:
            if fault.kind == "hang":
                await asyncio.sleep(3600)
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            else:
                return await self._misbehave(request, fault, None, {})
        job = self.jobs.get(request_id)
        if job is None:
            return web.json_response({"error": "Request not found"}, status=404)
        job.advance()
        return web.json_response(job.as_json())

    async def _misbehave(self, request: web.Request, fault: Fault, endpoint: Endpoint | None,
                         values: dict[str, Any]) -> web.StreamResponse:
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
            if endpoint is None:  # a status poll: a completed job whose image is `body`
                return web.json_response({"request_id": request.match_info["request_id"], "status": COMPLETED,
                                          "output": {"media_url": [fault.body], "media_type": "image/png"}})
            if endpoint.kind == "queue":
                return await self._enqueue(endpoint, values, image_url=fault.body)
            return web.json_response({endpoint.answer_field: fault.body})
        # reset: drop the connection without an answer
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    async def warm(self, width: int = 1024, height: int = 1024) -> None:
        """Render every variant of a size now (about 1 s of CPU each at 1024²), so that a measurement
        that follows does not include the simulator's one-off work."""
        for variant in range(VARIANTS):
            await asyncio.to_thread(rendered, width, height, variant, False, self.look)

    def image_bytes(self, url_or_name: str) -> bytes:
        """The exact bytes the image route serves for this URL or name (tests compare against them)."""
        name = url_or_name.rsplit("/", 1)[-1]
        match = IMAGE_NAME.fullmatch(name)
        if match is None:
            raise KeyError(name)
        width, height, variant, alpha = int(match[2]), int(match[3]), int(match[4]), bool(match[5])
        return rendered(width, height, variant, alpha, self.look) + text_chunk(f"pixazo-sim {name}") + IEND

    async def _image(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        match = IMAGE_NAME.fullmatch(name)
        if match is None or not all(MIN_SIDE <= int(match[i]) <= MAX_SIDE for i in (2, 3)):
            return web.Response(status=404, text="not found")
        width, height, variant, alpha = int(match[2]), int(match[3]), int(match[4]), bool(match[5])
        # A first request for a size renders it off the loop; every later one only sends cached bytes.
        head = await asyncio.to_thread(rendered, width, height, variant, alpha, self.look)
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

    async def _draw_time(self, delay: float) -> None:
        """A sync model's drawing time: `delay` seconds, unless release() ends it first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), delay)

    def release(self) -> None:
        """For tests of long calls: the sync requests drawing now answer at once (later ones wait again)."""
        self._release.set()
        self._release = asyncio.Event()

    async def _set_faults(self, request: web.Request) -> web.Response:
        """Control route: `{"faults": [Fault...], "job_faults": [JobFault...], "latency": s,
        "error_rates": {kind: rate}, "queue": {"polls_before_done": n, "seconds": s},
        "queued_models": [model...], "release": true}`, each optional."""
        payload = await request.json()
        try:
            self.push(*(Fault.from_json(item) for item in payload.get("faults", [])))
            self.push(*(JobFault.from_json(item) for item in payload.get("job_faults", [])))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "latency" in payload:
            self.latency = float(payload["latency"])
        if payload.get("release"):
            self.release()
        if "error_rates" in payload:
            self.error_rates = {str(k): float(v) for k, v in payload["error_rates"].items()}
        if "queued_models" in payload:
            self.queued_models = {str(m) for m in payload["queued_models"]}
        queue = payload.get("queue") or {}
        if "polls_before_done" in queue:
            self.queue_polls_before_done = int(queue["polls_before_done"])
        if "seconds" in queue:
            self.queue_seconds = float(queue["seconds"])
        return web.json_response({"queued": len(self.faults), "status_faults": len(self.status_faults),
                                  "job_faults": len(self.job_faults)})

    async def _reset(self, request: web.Request) -> web.Response:
        """Control route: forget faults and counters. Jobs stay: they are Pixazo's, not the test's."""
        self.faults.clear()
        self.status_faults.clear()
        self.job_faults.clear()
        self.stats = Stats()
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def _jobs(self, request: web.Request) -> web.Response:
        """Control route: every job's status answer, with its model path and polls so far."""
        return web.json_response({rid: job.as_json() | {"path": job.endpoint.path, "polls": job.polls}
                                  for rid, job in self.jobs.items()})

    async def _finish(self, request: web.Request) -> web.Response:
        """Control route: `{"state": "COMPLETED" | "FAILED" | "ERROR", "error": text}` ends a job now."""
        payload = await request.json()
        try:
            job = self.finish(request.match_info["request_id"], str(payload.get("state", COMPLETED)),
                              payload.get("error"))
        except KeyError:
            return web.json_response({"error": "Request not found"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(job.as_json())

