"""The use cases: generate an image and record it. Knows no MCP and no HTTP routing."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from app.core import messages
from app.core.costs import Budgets, Prices, surely_not_charged
from app.core.limits import CallerLimits
from app.core.metrics import Metrics
from app.core.origins import provenance_of
from app.core.requests import GenerationRequest
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
    UpstreamJobError,
    UpstreamJobTimeoutError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from app.pixazo.client import PixazoClient
from app.pixazo.gateway import COMPLETED, MAX_ERROR_CHARS, NOT_CHARGED_STATES, QUEUED, TERMINAL_STATES
from app.settings import Settings
from app.storage.database import RecordStore
from app.storage.images import ImageStore
from app.storage.provenance import COMPOSITE, TRAINED, Provenance
from app.storage.records import Generation, parse_utc
from app.storage.rows import CallMeta

logger = logging.getLogger(__name__)

# A signed link's signature, wherever an upstream text echoes it (see app.core.links).
SIGNATURE = re.compile(r"sig=[0-9A-Fa-f]+")

SUCCESS = "SUCCESS"
EXCEPTION = "EXCEPTION"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
UNAVAILABLE = "UNAVAILABLE"
INTERRUPTED = "INTERRUPTED"
# Poll answers worth another look: a queue job's status is read-only, so anything but a refusal of the
# request itself (4xx) may be tried again within the bound.
TRANSIENT_POLL_STATUSES = (408, 425, 429)
UNKNOWN_JOB = "UNKNOWN"  # the status route answered 404 for the job: row JOB_UNKNOWN

# Told each time a call's queue job is submitted or polled: (request id, state). The tool layer turns it
# into progress notifications; the service knows no MCP.
JobWatcher = Callable[[str, str], Awaitable[None]]


@dataclass
class LiveCall:
    """What a call in flight is doing now: for an answer given before it ends (PIXAZO_ANSWER_WITHIN_S),
    and for whoever watches its queue job (each waiting agent's progress)."""

    phase: str = "recorded"  # recorded, queued (for a slot here), submitted, job (Pixazo's queue), keeping
    request_id: str | None = None
    job_state: str | None = None
    started: float = field(default_factory=time.monotonic)
    watchers: list[JobWatcher] = field(default_factory=list)

    def elapsed_s(self) -> int:
        return round(time.monotonic() - self.started)

    def describe(self) -> str:
        if self.phase == "job" and self.request_id is not None:
            return f"Pixazo job {self.request_id}: {self.job_state or QUEUED}"
        return {"recorded": "starting", "queued": "waiting here for a free slot to call Pixazo",
                "submitted": "sent to Pixazo, waiting for the image",
                "keeping": "the image is made; keeping a copy"}.get(self.phase, self.phase)

    async def job(self, request_id: str, state: str) -> None:
        """The service's JobWatcher: remember the job's state and tell every watcher (best effort)."""
        self.phase, self.request_id, self.job_state = "job", request_id, state
        for watcher in list(self.watchers):
            try:
                await watcher(request_id, state)
            except Exception:  # a watcher's client may have gone; the call goes on
                logger.debug("a job watcher failed", exc_info=True)


@dataclass(frozen=True)
class Outcome:
    """A finished generation and, when it failed, the message for the caller."""

    generation: Generation
    error_message: str | None = None
    # Set when the image was made but could not be kept: why, for the caller.
    download_problem: str | None = None
    thumbnail: bytes | None = None
    # The last state of the call's queue job (None: no job). With `generation.status` JOB_ERROR it means
    # "not charged" (gateway.NOT_CHARGED_STATES); the cost is settled from it.
    job_state: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_message is None


def upstream_text(exc: UpstreamError) -> str:
    """What Pixazo said or sent, for the operators' `upstream_error` column."""
    if isinstance(exc, UpstreamHTTPError | UpstreamJobError):
        return exc.message
    if isinstance(exc, UpstreamProtocolError) and exc.detail is not None:
        return f"{exc}: {exc.detail[:MAX_ERROR_CHARS]}"
    return str(exc)


def status_for(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, UpstreamTimeoutError):
        return TIMEOUT
    if isinstance(exc, UpstreamJobError):
        return f"JOB_{exc.state}"
    return EXCEPTION


class GenerationService:
    def __init__(self, settings: Settings, store: RecordStore, client: PixazoClient,
                 images: ImageStore, metrics: Metrics | None = None, prices: Prices | None = None) -> None:
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
        self.drain_deadline: float | None = None  # when the SIGTERM's grace period ends (time.monotonic)
        self.prices = prices or Prices()
        self.limits = CallerLimits(settings.rate_limit_per_minute, settings.daily_limit, store,
                                   Budgets.from_settings(settings), settings.max_background_per_caller)
        self.metrics = metrics or Metrics()
        self.metrics.in_flight.set_function(lambda: self.cap.in_flight)
        self.metrics.queued.set_function(lambda: self.cap.waiting)

    def _scrub(self, text: str) -> str:
        """An upstream body may echo the key, or a signed link to an input image, it was sent: never
        store either (a signed link opens that image to anyone for minutes)."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else ""
        text = text.replace(key, "[redacted]") if key else text
        return SIGNATURE.sub("sig=[redacted]", text)

    def _observe(self, gen: Generation) -> None:
        self.metrics.generation(gen.status, gen.caller, gen.cost_usd)

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

    async def children(self, gen_id: int, viewer: str | None, limit: int) -> list[Generation]:
        """The generations made from this one, newest first, only what the viewer may see."""
        return await self.store.children(gen_id, limit, owned_by=viewer,
                                         owned_only=self.settings.history_visibility == "own")

    async def callers_and_statuses(self, viewer: str | None) -> tuple[list[str], list[str]]:
        """The gallery's filter choices; under `own` the only caller is the viewer, and the statuses are
        those of the viewer's own rows (another caller's failures are not the viewer's business)."""
        return await self.store.facets(viewer, owned_only=self.settings.history_visibility == "own")

    async def image_bytes(self, gen_id: int, viewer: str | None = None) -> tuple[bytes, str]:
        gen = await self.get(gen_id, viewer)
        if not gen.image_path or not gen.image_mime:
            raise NotFoundError(f"Generation {gen_id} has no stored image (status {gen.status}).")
        return await self.images.read(gen.image_path), gen.image_mime

    async def generate(self, request: GenerationRequest, caller: str | None = None,
                       on_job: JobWatcher | None = None) -> Outcome:
        """Record the request as PENDING, call Pixazo, keep the image, and finish the row whatever happens.

        `on_job` hears the request id and each polled state of a queue job (progress for the caller)."""
        pending, refusal = await self.admit(request, caller)
        if refusal is not None:
            return Outcome(pending, refusal)
        return await self.run(pending, request, LiveCall(watchers=[on_job] if on_job is not None else []))

    async def admit(self, request: GenerationRequest, caller: str | None) -> tuple[Generation, str | None]:
        """The call's row, PENDING; or, when a limit or the budget refuses it, the finished row and why."""
        made, refusal = await self.admit_batch([request], caller)
        return made[0], refusal

    async def admit_batch(self, requests: list[GenerationRequest], caller: str | None,
                          batch_id: str | None = None) -> tuple[list[Generation], str | None]:
        """A row per request (variations of one call: the same model and price, each its own seed, sharing
        `batch_id`), all PENDING, or all finished refused (nothing sent) with why."""
        first = requests[0]
        meta = CallMeta(first.model, first.operation, first.parent_id,
                        self.prices.price(first.endpoint, first.values), style=first.style, batch_id=batch_id)
        started = time.monotonic()
        made, refusal = await self.limits.record_batch(
            first.prompt, [request.recorded_parameters() for request in requests], caller, meta)
        self.metrics.stage("admit", time.monotonic() - started)
        if refusal is not None:
            for gen in made:
                self._observe(gen)  # already finished RATE_LIMITED or BUDGET_EXCEEDED: nothing was sent
            return made, refusal.message
        return made, None

    async def run(self, pending: Generation, request: GenerationRequest, live: LiveCall | None = None) -> Outcome:
        """Call Pixazo for an admitted row, keep the image, and finish the row whatever happens."""
        live = live or LiveCall()
        call = _Call(pending.id, pending.caller, on_job=live.job, edit=request.operation != "generate", live=live,
                     row=pending)
        self.in_flight += 1
        try:
            outcome = await self._generate(request, call)
            self._observe(outcome.generation)
            return outcome
        except asyncio.CancelledError:
            if self.draining and call.request_id is not None:
                # The server is stopping while Pixazo runs the job, which may be paid: the row stays
                # PENDING with its request id, and the next instance (or a replica) resumes polling it.
                logger.info("generation %s: stopping while job %s runs; left for another instance to resume",
                            call.id, call.request_id)
                raise
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

    async def resume(self, gen: Generation) -> Outcome:
        """Follow a queue job another instance submitted (or this one, before a restart) to its end, and
        finish its row as a live call would have: the image kept and SUCCESS, or the job's failure.

        The job is followed until PIXAZO_JOB_RESUME_S after the call was received. If this instance stops
        first, the row stays PENDING (the lease's release leaves it to the next instance)."""
        assert gen.request_id is not None  # noqa: S101 - claim_jobs returns only rows with a job
        age = max(0.0, (datetime.now(UTC) - parse_utc(gen.timestamp)).total_seconds())
        now = time.monotonic()
        call = _Call(gen.id, gen.caller, attempts=gen.attempts or 1, started=now - age,
                     deadline=now + self.settings.job_resume_s - age, bound_s=self.settings.job_resume_s,
                     request_id=gen.request_id, edit=gen.operation != "generate", row=gen)
        logger.info("generation %s: resuming Pixazo job %s (%.0f s after the call)", gen.id, gen.request_id, age)
        try:
            try:
                image_url = await self._await_job(gen.request_id, call)
            except UpstreamError as exc:
                outcome = await self._failed(call, exc)
            else:
                call.image_url = image_url
                outcome = await self._keep(image_url, call)
        except Exception:
            logger.exception("generation %s: resuming job failed unexpectedly", call.id)
            with anyio.CancelScope(shield=True):
                done = await self.store.finish(call.id, EXCEPTION, error="internal error", image_url=call.image_url,
                                               **call.fields())
            outcome = Outcome(done, messages.INTERNAL)
        self._observe(outcome.generation)
        return outcome

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
        call.phase("queued")
        try:
            try:
                async with self.cap.slot(call.caller) as waited:
                    call.phase("submitted")
                    call.queue_s = waited
                    self.metrics.queue_wait.observe(waited)
                    image_url = await self._call_with_retries(request, call)
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
                return await self._failed(call, exc)
            verdict = True
            self.breaker.record_success()
            call.image_url = image_url  # from here on, a cancelled or failed row still keeps the URL
        finally:
            if not verdict:
                self.breaker.release_probe(probe)
        return await self._keep(image_url, call)

    async def _failed(self, call: _Call, exc: UpstreamError) -> Outcome:
        """Finish the row of a call Pixazo failed, with the caller's message."""
        http_status = exc.status if isinstance(exc, UpstreamHTTPError) else None
        # Every caller who reads the row later sees what this caller was told; Pixazo's own
        # words go to a column (and a log line) that only operators read.
        message = messages.for_upstream(exc, self.settings.timeout_s)
        if self.settings.demo:  # the demo's simulator charges nothing: never worry a newcomer with it
            message = messages.without_charges(message)
        if call.edit and isinstance(exc, UpstreamJobError):
            message += messages.EDIT_INPUT_HINT
        upstream = self._scrub(upstream_text(exc))
        logger.info("generation %s: Pixazo failed (%s): %s", call.id, status_for(exc), upstream)
        done = await self.store.finish(call.id, status_for(exc), error=message, http_status=http_status,
                                       upstream_error=upstream, **call.fields())
        return Outcome(done, message, job_state=call.job_state)

    async def _keep(self, image_url: str, call: _Call) -> Outcome:
        """Download the made image into storage and finish the row (SUCCESS, or DOWNLOAD_FAILED with the URL)."""
        call.phase("keeping")
        provenance = await self._provenance(call)
        try:
            # Editing tools make larger images than any text-to-image model (an 8x upscale): their own caps.
            edit = call.edit
            stored = await self.images.download(
                image_url, call.id, with_thumbnail=self.settings.inline_image == "thumbnail",
                max_pixels=self.settings.max_edit_pixels if edit else None,
                max_bytes=self.settings.max_edit_bytes if edit else None, provenance=provenance)
        except DownloadError as exc:
            done = await self.store.finish(call.id, DOWNLOAD_FAILED, image_url=image_url, error=str(exc),
                                           **call.fields())
            return Outcome(done, download_problem=str(exc), job_state=call.job_state)
        except Exception:
            # The image is paid for: whatever broke while keeping it, the caller still gets its URL
            # (never the generic "try again", which would pay for a second one).
            logger.exception("generation %s: keeping the image failed unexpectedly", call.id)
            why = "the server failed while keeping the image (internal error)"
            done = await self.store.finish(call.id, DOWNLOAD_FAILED, image_url=image_url, error=why,
                                           **call.fields())
            return Outcome(done, download_problem=why, job_state=call.job_state)
        started = time.monotonic()
        done = await self.store.finish(call.id, SUCCESS, image_url=image_url, image=stored, **call.fields())
        self.metrics.stage("finish", time.monotonic() - started)
        return Outcome(done, thumbnail=stored.thumbnail, job_state=call.job_state)

    async def _provenance(self, call: _Call) -> Provenance | None:
        """What the kept image will say about where it came from. A failed lookup never costs the image:
        it is marked without a parent, an edit as composite (the weaker claim)."""
        if call.row is None:  # pragma: no cover - every call carries its row
            return None
        gen = call.row
        try:
            return await provenance_of(self.store, gen)
        except Exception:
            logger.exception("generation %s: its provenance could not be worked out", gen.id)
            return Provenance(gen.id, gen.operation, gen.model, COMPOSITE if call.edit else TRAINED)

    async def _call_with_retries(self, request: GenerationRequest, call: _Call) -> str:
        """Submit, retrying only where Pixazo surely made nothing, within one overall deadline; then, for a
        queue model, wait for the job. Returns the image's URL."""
        s = self.settings
        call.deadline = time.monotonic() + s.deadline_s
        call.bound_s = s.deadline_s
        body = request.upstream_body()
        while True:
            call.attempts += 1
            remaining = call.deadline - time.monotonic()
            started = time.monotonic()
            call.may_have_sent = True  # from the moment the request may leave us
            try:
                answer = await self.client.submit(request.endpoint, body,
                                                  timeout_s=max(0.1, min(s.timeout_s, remaining)))
            except UpstreamError as exc:
                call.may_have_sent = not surely_not_charged(exc)
                self.metrics.upstream_latency.observe(time.monotonic() - started)
                if not is_retryable(exc) or call.attempts > s.max_retries:
                    raise
                retry_after = exc.retry_after if isinstance(exc, UpstreamHTTPError) else None
                delay = self.backoff.delay(call.attempts, retry_after, self._rng)
                if time.monotonic() + delay >= call.deadline:
                    raise
                logger.info("generation %s: attempt %d failed (%s); retrying in %.1f s",
                            call.id, call.attempts, status_for(exc), delay)
                self.metrics.retries.inc()
                await asyncio.sleep(delay)
            else:
                self.metrics.upstream_latency.observe(time.monotonic() - started)
                if answer.image_url is not None:
                    return answer.image_url
                assert answer.request_id is not None  # noqa: S101 - submit gives one or the other
                # Recorded before the first poll: from here on the job survives this process (a restart
                # or a replica resumes it instead of marking the row INTERRUPTED). Shielded: a cancel
                # arriving now must not leave a submitted, maybe paid, job without its id.
                call.request_id, call.job_state = answer.request_id, QUEUED
                with anyio.CancelScope(shield=True):
                    await self.store.set_request_id(call.id, answer.request_id)
                await call.notify()
                return await self._await_job(answer.request_id, call)

    async def _await_job(self, request_id: str, call: _Call) -> str:
        """Poll a queue job until it ends, within `call.deadline`; the image's URL, or an UpstreamError.

        Waits grow from PIXAZO_POLL_BASE_S by 1.5 up to PIXAZO_POLL_CAP_S. A poll that fails on the way
        (429, 5xx, a broken connection, an unusable answer) is tried again after the next wait, or after
        Retry-After when that is longer: reading a job's status is harmless to repeat. A 404 means Pixazo
        does not know the job; any other 4xx ends the call as that HTTP failure."""
        call.request_id = request_id
        polls = 0
        retry_after: float | None = None
        while True:
            polls += 1
            delay = min(self.settings.poll_cap_s, self.settings.poll_base_s * (1.5 ** min(polls - 1, 20)))
            if retry_after is not None:
                delay = max(delay, retry_after)
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamJobTimeoutError(request_id, call.job_state if call.polled else None, call.bound_s)
            # The last wait is cut short so that one more poll happens at the deadline itself.
            await asyncio.sleep(min(delay, remaining))
            retry_after = None
            try:
                status = await self.client.poll(request_id, timeout_s=max(0.1, min(
                    self.settings.timeout_s, call.deadline - time.monotonic())))
            except UpstreamHTTPError as exc:
                if exc.status == 404:
                    raise UpstreamJobError(UNKNOWN_JOB, exc.message) from None
                if exc.status < 500 and exc.status not in TRANSIENT_POLL_STATUSES:
                    raise
                retry_after = exc.retry_after
                logger.info("generation %s: polling job %s failed (%s); polling again", call.id, request_id,
                            status_for(exc))
                continue
            except UpstreamError as exc:
                logger.info("generation %s: polling job %s failed (%s); polling again", call.id, request_id,
                            status_for(exc))
                continue
            call.job_state, call.polled = status.state, True
            if status.state == COMPLETED and status.image_url is not None:
                await call.notify()
                return status.image_url
            if status.state in TERMINAL_STATES:
                await call.notify()
                raise UpstreamJobError(status.state, status.error or "no reason given")
            await call.notify()


@dataclass
class _Call:
    """What one call has done so far, for its row."""

    id: int
    caller: str | None = None
    attempts: int = 0
    queue_s: float | None = None
    image_url: str | None = None
    started: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    bound_s: float = 0.0  # what `deadline` stands for, in seconds (for the caller's message)
    request_id: str | None = None  # Pixazo's queue job, once submitted
    job_state: str | None = None
    edit: bool = False  # made by an editing tool: its image is kept under the edit caps
    # Whether the submission may have reached Pixazo: False until a request may leave us, and again when
    # its answer says nothing was made (costs.surely_not_charged). Retries happen only after such
    # answers, so the last attempt decides.
    may_have_sent: bool = False

    @property
    def may_be_charged(self) -> bool:
        """A submitted queue job (a request id: also a resumed one) may be charged unless it ended in a
        state Pixazo says is not charged; any other call, once its request may have reached Pixazo."""
        if self.job_state in NOT_CHARGED_STATES:
            return False
        return self.may_have_sent or self.request_id is not None
    polled: bool = False  # whether a poll has answered yet
    on_job: JobWatcher | None = None
    live: LiveCall | None = None
    row: Generation | None = None  # the call's row as admitted (what its image's provenance is worked out from)

    def phase(self, name: str) -> None:
        if self.live is not None:
            self.live.phase = name

    async def notify(self) -> None:
        """Tell the watcher (the caller's progress) about the job; a watcher that fails never fails the call."""
        if self.on_job is None or self.request_id is None or self.job_state is None:
            return
        try:
            await self.on_job(self.request_id, self.job_state)
        except Exception:  # progress is best effort: the client may have gone; the call goes on
            logger.debug("generation %s: could not report job progress", self.id, exc_info=True)

    def fields(self) -> dict[str, Any]:
        return {
            "duration_ms": round((time.monotonic() - self.started) * 1000),
            "attempts": self.attempts,
            "queue_ms": None if self.queue_s is None else round(self.queue_s * 1000),
            # None keeps the price recorded at admission; 0 says Pixazo surely charged nothing.
            "cost_usd": None if self.may_be_charged else 0.0,
        }
