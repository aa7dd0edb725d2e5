"""The only Pixazo gateway client, and every assumption we make about the gateway.

What is publicly known is in the project's shared docs (pixazo-api.md); nothing here was confirmed
with a live key, so the facts below are written to tolerate each reported variant. The simulator
(`app.pixazo.simulator`) imports these same constants, so correcting one corrects both.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from app.errors import (
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from app.net import is_http_url

# --- Gateway facts -------------------------------------------------------------------------------
SDXL_PATH = "/getImage/v1/getSDXLImage"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
# The SDXL answer is {"imageUrl": ...}; Flux answers {"output": ...}; newer models nest a list
# ({"output": {"media_url": [...]}}). The first string found is the URL, and it must be http(s).
IMAGE_URL_FIELDS = ("imageUrl", "output")
# Error bodies seen: {"error": ...}, {"error": ..., "message": ...}, Azure APIM {"statusCode", "message"},
# and plain text. The first present field wins; else the HTTP reason phrase.
ERROR_MESSAGE_FIELDS = ("error", "message")
# Answers larger than this are not a JSON URL document; stop reading rather than buffer them.
MAX_ANSWER_BYTES = 1 << 20
# The longest upstream error message we keep on a row.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Limit:
    """An inclusive range for one request field, and an optional step."""

    minimum: float
    maximum: float
    multiple_of: int | None = None


# Per-model bounds, from Pixazo's model pages (one source gives guidance_scale 1-15).
SDXL_LIMITS: dict[str, Limit] = {
    "prompt": Limit(1, 2000),
    "negative_prompt": Limit(0, 2000),
    "width": Limit(512, 1536, multiple_of=8),
    "height": Limit(512, 1536, multiple_of=8),
    "num_steps": Limit(1, 20),
    "guidance_scale": Limit(1, 15),
    "seed": Limit(0, 4_294_967_295),
}


def sdxl_url(base_url: str) -> str:
    return base_url.rstrip("/") + SDXL_PATH


def request_headers(api_key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
        KEY_HEADER: api_key,
    }


def error_message(body: bytes, reason: str | None) -> str:
    """The gateway's own words for a failure, else the HTTP reason phrase."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for field in ERROR_MESSAGE_FIELDS:
            value = payload.get(field)
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_ERROR_CHARS]
    return (reason or "no reason given")[:MAX_ERROR_CHARS]


def _candidate_url(payload: Any) -> str | None:
    """The first URL-shaped value in any answer shape we know (see IMAGE_URL_FIELDS), unchecked."""
    if not isinstance(payload, dict):
        return None
    for field in IMAGE_URL_FIELDS:
        value = payload.get(field)
        if isinstance(value, str):
            return value
    nested = payload.get("output")
    if isinstance(nested, dict):
        urls = nested.get("media_url")
        if isinstance(urls, list) and urls and isinstance(urls[0], str):
            return urls[0]
    return None


def image_url_from(payload: Any) -> str:
    """Find the image URL in a success body, or raise UpstreamProtocolError.

    Whatever the shape, the URL must be http(s) before anything stores, returns or shows it: a
    `javascript:` link from the gateway would otherwise end up in the agent's result and the gallery.
    """
    url = _candidate_url(payload)
    if url is None:
        raise UpstreamProtocolError("the answer has no imageUrl")
    if not is_http_url(url):
        raise UpstreamProtocolError("the image URL in the answer is not an http(s) URL", detail=url)
    return url


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


class PixazoClient:
    """Sends one generation request over the process's shared aiohttp session."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, api_key: SecretStr | None,
                 timeout: aiohttp.ClientTimeout) -> None:
        self._http = http
        self._url = sdxl_url(base_url)
        self._api_key = api_key
        self._timeout = timeout

    @property
    def has_key(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    async def generate(self, body: dict[str, Any], timeout_s: float | None = None) -> str:
        """POST one SDXL request; return the image URL or raise an UpstreamError.

        Exception texts from aiohttp are never carried over: they can include request headers.
        """
        key = self._api_key.get_secret_value() if self._api_key is not None else ""
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=self._timeout.sock_connect)
        try:
            async with self._http.post(
                self._url, json=body, headers=request_headers(key), timeout=timeout,
                allow_redirects=False,
            ) as resp:
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
            payload = json.loads(raw)
        except ValueError:
            raise UpstreamProtocolError("the answer is not valid JSON") from None
        return image_url_from(payload)
