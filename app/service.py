"""The use cases: generate an image and record it. Knows no MCP and no HTTP routing."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from app import messages
from app.errors import DownloadError, NotFoundError, UpstreamError, UpstreamHTTPError, UpstreamTimeoutError
from app.images import ImageStore
from app.pixazo import PixazoClient
from app.settings import Settings
from app.store import Generation, GenerationStore

logger = logging.getLogger(__name__)

SUCCESS = "SUCCESS"
EXCEPTION = "EXCEPTION"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"


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

    @property
    def ok(self) -> bool:
        return self.error_message is None


def status_for(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, UpstreamTimeoutError):
        return TIMEOUT
    return EXCEPTION


class GenerationService:
    def __init__(self, settings: Settings, store: GenerationStore, client: PixazoClient,
                 images: ImageStore) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.images = images

    async def get(self, gen_id: int) -> Generation:
        found = await self.store.get(gen_id)
        if found is None:
            raise NotFoundError(f"No generation with id {gen_id}.")
        return found

    async def image_bytes(self, gen_id: int) -> tuple[bytes, str]:
        gen = await self.get(gen_id)
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

    async def generate(self, request: GenerationRequest) -> Outcome:
        """Record the request as PENDING, call Pixazo, and finish the row whatever happens."""
        pending = await self.store.insert_pending(request.prompt, request.recorded_parameters())
        started = time.monotonic()

        def elapsed_ms() -> int:
            return round((time.monotonic() - started) * 1000)

        try:
            if not self.client.has_key:
                done = await self.store.finish(pending.id, EXCEPTION, error="no Pixazo API key configured",
                                               duration_ms=0)
                return Outcome(done, messages.NO_KEY)
            image_url = await self.client.generate(request.upstream_body())
            try:
                stored = await self.images.download(image_url, pending.id)
            except DownloadError as exc:
                done = await self.store.finish(pending.id, DOWNLOAD_FAILED, image_url=image_url,
                                               error=str(exc), duration_ms=elapsed_ms())
                return Outcome(done, download_problem=str(exc))
        except UpstreamError as exc:
            http_status = exc.status if isinstance(exc, UpstreamHTTPError) else None
            error = exc.message if isinstance(exc, UpstreamHTTPError) else str(exc)
            done = await self.store.finish(pending.id, status_for(exc), error=error,
                                           http_status=http_status, duration_ms=elapsed_ms())
            return Outcome(done, messages.for_upstream(exc, self.settings.timeout_s))
        except asyncio.CancelledError:
            # The caller went away: finish the row even though this task is being cancelled.
            with anyio.CancelScope(shield=True):
                await self.store.finish(pending.id, CANCELLED, error="the caller cancelled the call",
                                        duration_ms=elapsed_ms())
            raise
        except Exception:
            logger.exception("generation %s failed unexpectedly", pending.id)
            done = await self.store.finish(pending.id, EXCEPTION, error="internal error",
                                           duration_ms=elapsed_ms())
            return Outcome(done, messages.INTERNAL)
        done = await self.store.finish(pending.id, SUCCESS, image_url=image_url, duration_ms=elapsed_ms(),
                                       image=stored)
        return Outcome(done)

