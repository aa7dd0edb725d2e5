"""The use cases: generate an image and record it. Knows no MCP and no HTTP routing."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from app.core import messages
from app.core.limits import CallerLimits
from app.core.metrics import Metrics
from app.core.resilience import (
    Backoff,
    BreakerOpenError,
    CircuitBreaker,
    ConcurrencyCap,
    QueueTimeoutError,
    counts_against_gateway,
    is_retryable,
)
from app.errors import (
    DownloadError,
    NotFoundError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from app.pixazo.client import PixazoClient
from app.pixazo.gateway import MAX_ERROR_CHARS
from app.settings import Settings
from app.storage.database import RecordStore
from app.storage.images import ImageStore
from app.storage.records import Generation

logger = logging.getLogger(__name__)

SUCCESS = "SUCCESS"
EXCEPTION = "EXCEPTION"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
UNAVAILABLE = "UNAVAILABLE"
INTERRUPTED = "INTERRUPTED"


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request: what goes to Pixazo, and the caller's extra arguments (kept, not sent)."""

    prompt: str
    width: int
    height: int
    num_steps: int
    guidance_scale: float
    seed: int
    negative_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def upstream_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": self.prompt}
        if self.negative_prompt is not None:
            body["negative_prompt"] = self.negative_prompt
        body |= {
            "width": self.width, "height": self.height, "num_steps": self.num_steps,
            "guidance_scale": self.guidance_scale, "seed": self.seed,
        }
        return body

    def recorded_parameters(self) -> dict[str, Any]:
        """What `parameters_json` keeps: the sent parameters and every extra argument."""
        sent = self.upstream_body()
        del sent["prompt"]
        return {**self.extra, **sent}


@dataclass(frozen=True)
class Outcome:
    """A finished generation and, when it failed, the message for the caller."""

    generation: Generation
    error_message: str | None = None
    # Set when the image was made but could not be kept: why, for the caller.
    download_problem: str | None = None
    thumbnail: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error_message is None


def upstream_text(exc: UpstreamError) -> str:
    """What Pixazo said or sent, for the operators' `upstream_error` column."""
    if isinstance(exc, UpstreamHTTPError):
        return exc.message
    if isinstance(exc, UpstreamProtocolError) and exc.detail is not None:
        return f"{exc}: {exc.detail[:MAX_ERROR_CHARS]}"
    return str(exc)


def status_for(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, UpstreamTimeoutError):
        return TIMEOUT
    return EXCEPTION


class GenerationService:
    def __init__(self, settings: Settings, store: RecordStore, client: PixazoClient,
                 images: ImageStore, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.images = images
        self.cap = ConcurrencyCap(settings.max_concurrency, settings.queue_timeout_s)
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self.backoff = Backoff(settings.retry_base_s, settings.retry_cap_s)
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not security
        self.in_flight = 0
        self.draining = False  # set on SIGTERM: cancellations then mean INTERRUPTED
        self.limits = CallerLimits(settings.rate_limit_per_minute, settings.daily_limit, store)
        self.metrics = metrics or Metrics()
        self.metrics.in_flight.set_function(lambda: self.cap.in_flight)
        self.metrics.queued.set_function(lambda: self.cap.waiting)

    def _scrub(self, text: str) -> str:
        """An upstream body may echo the key it was sent: never store it."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else ""
        return text.replace(key, "[redacted]") if key else text

    def _observe(self, gen: Generation) -> None:
        self.metrics.generation(gen.status, gen.caller)

    def may_see(self, gen: Generation, viewer: str | None) -> bool:
        """PIXAZO_HISTORY_VISIBILITY: `team` shows every row to every caller, `own` only the viewer's."""
        return self.settings.history_visibility == "team" or gen.caller == viewer

    async def get(self, gen_id: int, viewer: str | None = None) -> Generation:
        """One row the viewer may see; another caller's row under `own` is as missing as no row."""
        found = await self.store.get(gen_id)
        if found is None or not self.may_see(found, viewer):
            raise NotFoundError(f"No generation with id {gen_id}.")
        return found

    async def page(self, viewer: str | None, *, limit: int = 20, status: str | None = None,
                   query: str | None = None, before_id: int | None = None,
                   caller: str | None = None) -> list[Generation]:
        """Newest first, only what the viewer may see."""
        return await self.store.page(limit=limit, status=status, query=query, before_id=before_id, caller=caller,
                                     owned_by=viewer, owned_only=self.settings.history_visibility == "own")

    async def callers_and_statuses(self, viewer: str | None) -> tuple[list[str], list[str]]:
        """The gallery's filter choices; under `own` the only caller is the viewer."""
        callers, statuses = await self.store.facets()
        if self.settings.history_visibility == "own":
            callers = [viewer] if viewer is not None else []
        return callers, statuses

    async def image_bytes(self, gen_id: int, viewer: str | None = None) -> tuple[bytes, str]:
        gen = await self.get(gen_id, viewer)
        if not gen.image_path or not gen.image_mime:
            raise NotFoundError(f"Generation {gen_id} has no stored image (status {gen.status}).")
        return await self.images.read(gen.image_path), gen.image_mime

    def build_request(self, prompt: str, *, negative_prompt: str | None = None, width: int | None = None,
                      height: int | None = None, num_steps: int | None = None,
                      guidance_scale: float | None = None, seed: int | None = None,
                      extra: dict[str, Any] | None = None) -> GenerationRequest:
        """Merge the caller's values over the configured defaults (caller values win)."""
        s = self.settings
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=s.default_width if width is None else width,
            height=s.default_height if height is None else height,
            num_steps=s.default_num_steps if num_steps is None else num_steps,
            guidance_scale=s.default_guidance_scale if guidance_scale is None else guidance_scale,
            seed=s.default_seed if seed is None else seed,
            extra=dict(extra or {}),
        )

    async def generate(self, request: GenerationRequest, caller: str | None = None) -> Outcome:
        """Record the request as PENDING, call Pixazo, keep the image, and finish the row whatever happens."""
        pending, refusal = await self.limits.record(request.prompt, request.recorded_parameters(), caller)
        if refusal is not None:
            self._observe(pending)  # already finished RATE_LIMITED: nothing was sent
            return Outcome(pending, refusal.message)
        call = _Call(pending.id, caller)
        self.in_flight += 1
        try:
            outcome = await self._generate(request, call)
            self._observe(outcome.generation)
            return outcome
        except asyncio.CancelledError:
            # The caller went away, or the server is stopping: finish the row even though this task
            # is being cancelled (a shielded scope lets the write complete).
            status, why = ((INTERRUPTED, "the server stopped before this call finished") if self.draining
                           else (CANCELLED, "the caller cancelled the call"))
            with anyio.CancelScope(shield=True):
                self._observe(await self.store.finish(call.id, status, error=why, image_url=call.image_url,
                                                      **call.fields()))
            raise
        except Exception:
            logger.exception("generation %s failed unexpectedly", call.id)
            with anyio.CancelScope(shield=True):
                done = await self.store.finish(call.id, EXCEPTION, error="internal error", image_url=call.image_url,
                                               **call.fields())
            self._observe(done)
            return Outcome(done, messages.INTERNAL)
        finally:
            self.in_flight -= 1

    async def _generate(self, request: GenerationRequest, call: _Call) -> Outcome:
        if not self.client.has_key:
            done = await self.store.finish(call.id, EXCEPTION, error="no Pixazo API key configured",
                                           **call.fields())
            return Outcome(done, messages.NO_KEY)
        try:
            probe = self.breaker.before_call()
        except BreakerOpenError as exc:
            done = await self.store.finish(
                call.id, UNAVAILABLE, error=f"circuit breaker open after {self.breaker.failures} failures",
                **call.fields())
            return Outcome(done, messages.unavailable(exc.retry_in))
        verdict = False
        try:
            try:
                async with self.cap.slot(call.caller) as waited:
                    call.queue_s = waited
                    self.metrics.queue_wait.observe(waited)
                    image_url = await self._call_with_retries(request.upstream_body(), call)
            except QueueTimeoutError:
                done = await self.store.finish(
                    call.id, TIMEOUT, error=f"no free slot within {self.cap.queue_timeout_s:g} s; nothing was sent",
                    **call.fields())
                return Outcome(done, messages.queue_timeout(self.cap.queue_timeout_s))
            except UpstreamError as exc:
                verdict = True
                if counts_against_gateway(exc):
                    self.breaker.record_failure(probe)
                else:
                    self.breaker.record_success()
                http_status = exc.status if isinstance(exc, UpstreamHTTPError) else None
                # Every caller who reads the row later sees what this caller was told; Pixazo's own
                # words go to a column (and a log line) that only operators read.
                message = messages.for_upstream(exc, self.settings.timeout_s)
                upstream = self._scrub(upstream_text(exc))
                logger.info("generation %s: Pixazo failed (%s): %s", call.id, status_for(exc), upstream)
                done = await self.store.finish(call.id, status_for(exc), error=message, http_status=http_status,
                                               upstream_error=upstream, **call.fields())
                return Outcome(done, message)
            verdict = True
            self.breaker.record_success()
            call.image_url = image_url  # from here on, a cancelled or failed row still keeps the URL
        finally:
            if not verdict:
                self.breaker.release_probe(probe)
        try:
            stored = await self.images.download(image_url, call.id,
                                                with_thumbnail=self.settings.inline_image == "thumbnail")
        except DownloadError as exc:
            done = await self.store.finish(call.id, DOWNLOAD_FAILED, image_url=image_url, error=str(exc),
                                           **call.fields())
            return Outcome(done, download_problem=str(exc))
        except Exception:
            # The image is paid for: whatever broke while keeping it, the caller still gets its URL
            # (never the generic "try again", which would pay for a second one).
            logger.exception("generation %s: keeping the image failed unexpectedly", call.id)
            why = "the server failed while keeping the image (internal error)"
            done = await self.store.finish(call.id, DOWNLOAD_FAILED, image_url=image_url, error=why,
                                           **call.fields())
            return Outcome(done, download_problem=why)
        done = await self.store.finish(call.id, SUCCESS, image_url=image_url, image=stored, **call.fields())
        return Outcome(done, thumbnail=stored.thumbnail)

    async def _call_with_retries(self, body: dict[str, Any], call: _Call) -> str:
        """Retries only where Pixazo surely made no image, within one overall deadline."""
        s = self.settings
        deadline = time.monotonic() + s.deadline_s
        while True:
            call.attempts += 1
            remaining = deadline - time.monotonic()
            started = time.monotonic()
            try:
                image_url = await self.client.generate(body, timeout_s=max(0.1, min(s.timeout_s, remaining)))
            except UpstreamError as exc:
                self.metrics.upstream_latency.observe(time.monotonic() - started)
                if not is_retryable(exc) or call.attempts > s.max_retries:
                    raise
                retry_after = exc.retry_after if isinstance(exc, UpstreamHTTPError) else None
                delay = self.backoff.delay(call.attempts, retry_after, self._rng)
                if time.monotonic() + delay >= deadline:
                    raise
                logger.info("generation %s: attempt %d failed (%s); retrying in %.1f s",
                            call.id, call.attempts, status_for(exc), delay)
                self.metrics.retries.inc()
                await asyncio.sleep(delay)
            else:
                self.metrics.upstream_latency.observe(time.monotonic() - started)
                return image_url


@dataclass
class _Call:
    """What one call has done so far, for its row."""

    id: int
    caller: str | None = None
    attempts: int = 0
    queue_s: float | None = None
    image_url: str | None = None
    started: float = field(default_factory=time.monotonic)

    def fields(self) -> dict[str, Any]:
        return {
            "duration_ms": round((time.monotonic() - self.started) * 1000),
            "attempts": self.attempts,
            "queue_ms": None if self.queue_s is None else round(self.queue_s * 1000),
        }
