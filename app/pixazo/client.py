"""The only Pixazo gateway client: HTTP transport over the process's shared aiohttp session.

What it sends and how it reads the answers come from `app.pixazo.gateway`, the one module that
holds every assumption about Pixazo.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from app.errors import (
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from app.pixazo.gateway import (
    COMPLETED,
    MAX_ANSWER_BYTES,
    MAX_ERROR_CHARS,
    STATUS_PATH,
    TERMINAL_STATES,
    Endpoint,
    error_message,
    image_url_from,
    poll_headers,
    queue_state,
    request_headers,
    request_id_from,
)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse Retry-After in either form (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not '²' or U+0661: float() fails on one, misreads the other
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:  # pragma: no cover - defensive: older Pythons returned None
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Answer:
    """What a submit gave: the image's URL (a sync model), or the id of a queue job to poll."""

    image_url: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class JobStatus:
    """One poll of a queue job: its state, the image's URL once COMPLETED, Pixazo's words on failure."""

    state: str
    image_url: str | None = None
    error: str | None = None


class PixazoClient:
    """Sends requests to Pixazo over the process's shared aiohttp session."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, api_key: SecretStr | None,
                 timeout: aiohttp.ClientTimeout) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    @property
    def has_key(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    def _key(self) -> str:
        return self._api_key.get_secret_value() if self._api_key is not None else ""

    async def submit(self, endpoint: Endpoint, body: dict[str, Any], timeout_s: float | None = None) -> Answer:
        """POST one request to a model; return its image URL or its queue job, or raise an UpstreamError.

        Whatever the catalogue expects of the model, both answer shapes are accepted: sources disagree
        on which models queue.
        """
        payload = await self._send("POST", self._base + endpoint.path, request_headers(self._key()), body,
                                   timeout_s)
        job = request_id_from(payload)
        if job is not None and not _has_image(payload):
            return Answer(request_id=job)
        return Answer(image_url=image_url_from(payload))

    async def poll(self, request_id: str, timeout_s: float | None = None) -> JobStatus:
        """One look at a queue job (the generic status route on our own base URL: the key never goes to a
        host an answer names, such as its `polling_url`)."""
        path = STATUS_PATH.format(request_id=quote(request_id, safe=""))
        payload = await self._send("GET", self._base + path, poll_headers(self._key()), None, timeout_s)
        state = queue_state(payload.get("status") if isinstance(payload, dict) else None)
        if state is None:
            raise UpstreamProtocolError("the job status answer has no known state", detail=str(payload)[:200])
        if state == COMPLETED:
            return JobStatus(state, image_url=image_url_from(payload))
        if state in TERMINAL_STATES:
            return JobStatus(state, error=_job_error(payload))
        return JobStatus(state)

    async def _send(self, method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None,
                    timeout_s: float | None) -> Any:
        """One HTTP exchange; the JSON answer, or an UpstreamError.

        Exception texts from aiohttp are never carried over: they can include request headers.
        """
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=self._timeout.sock_connect)
        try:
            async with self._http.request(method, url, json=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES)
                if resp.status >= 400:
                    raise UpstreamHTTPError(
                        resp.status, error_message(raw, resp.reason),
                        retry_after_seconds(resp.headers.get("Retry-After")),
                    )
                if resp.status >= 300:
                    raise UpstreamProtocolError(f"unexpected HTTP {resp.status} answer")
        # `from None` everywhere: aiohttp exceptions can carry request headers (the key), and a
        # chained cause would put them into any traceback that is logged.
        except TimeoutError:
            raise UpstreamTimeoutError("no answer from Pixazo within the time budget") from None
        except aiohttp.ClientConnectorError:
            raise UpstreamConnectionError("could not connect to Pixazo", sent=False) from None
        except aiohttp.ClientPayloadError:
            raise UpstreamProtocolError("the answer was cut off") from None
        except aiohttp.ClientError as exc:
            # The connection broke after it was made: the request may have been received.
            raise UpstreamConnectionError(
                f"the connection to Pixazo broke ({type(exc).__name__})", sent=True,
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise UpstreamProtocolError("the answer is not valid JSON") from None


def _has_image(payload: Any) -> bool:
    try:
        image_url_from(payload)
    except UpstreamProtocolError:
        return False
    return True


def _job_error(payload: Any) -> str:
    """Why a job failed, in Pixazo's words when it gave any."""
    if isinstance(payload, dict):
        for value in (payload.get("error"), payload.get("message")):
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_ERROR_CHARS]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"]).strip()[:MAX_ERROR_CHARS]
    return "the job failed without a reason"
