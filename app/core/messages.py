"""The fixed catalogue of what a caller reads when a generation fails.

Written for agents: what failed, whether trying again can help, and when. Never an upstream body,
an exception's text, or the key. A failed call's message is also its row's `error`, which any caller
may read later; Pixazo's own words stay in `upstream_error` and the operator's logs.
"""

from __future__ import annotations

import math

from app.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamJobError,
    UpstreamJobTimeoutError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)

NO_KEY = (
    "The server has no Pixazo API key configured, so it cannot generate images. "
    "Retrying will not help; ask the operator to set PIXAZO_API_KEY."
)
# Added to a failed edit's message: Pixazo fetches the input image itself, and a failed fetch looks
# like any other failed job to us (Pixazo's own words, which may say so, are for operators).
EDIT_INPUT_HINT = (
    " Pixazo must be able to fetch the input image: an older generation's Pixazo URL may have expired, "
    "and a URL must be public. An operator can set PIXAZO_PUBLIC_URL so that the server hands Pixazo a "
    "signed link to its own copy of a generation.")
INTERNAL = "The server failed unexpectedly while handling this call. You may try again once."


def unavailable(retry_in: float) -> str:
    return (
        "Pixazo has been failing repeatedly, so the server is pausing calls to it. Nothing was sent. "
        f"Try again in {max(1, math.ceil(retry_in))} seconds."
    )


def queue_timeout(waited_s: float) -> str:
    return (
        f"The server is busy: no slot to call Pixazo freed up within {waited_s:g} seconds. Nothing was sent. "
        "Try again in a minute."
    )

_HTTP: dict[int, str] = {
    400: "Pixazo rejected the request parameters. Change the prompt or parameters before trying again.",
    401: "Pixazo refused the server's API key. Retrying will not help; ask the operator to check "
         "PIXAZO_API_KEY.",
    402: "The Pixazo account has no credits left. Retrying will not help until the operator tops it up.",
    403: "Pixazo refused the request (forbidden, often an exhausted balance). Retrying will not help; "
         "ask the operator.",
    404: "Pixazo does not know the endpoint. Retrying will not help; ask the operator to check "
         "PIXAZO_BASE_URL.",
    413: "Pixazo found the request too large. Shorten the prompt before trying again.",
    422: "Pixazo rejected the request parameters. Change the prompt or parameters before trying again.",
}


def _when(seconds: float | None, default: str) -> str:
    if seconds is None:
        return default
    return f"Try again in {max(1, math.ceil(seconds))} seconds."


def for_upstream(exc: UpstreamError, timeout_s: float) -> str:
    """The caller's message for a failed upstream call."""
    if isinstance(exc, UpstreamHTTPError):
        prefix = f"Pixazo answered HTTP {exc.status}: "
        if exc.status == 429:
            return prefix + "it is rate limiting requests. " + _when(exc.retry_after,
                                                                     "Try again in a minute.")
        if exc.status in _HTTP:
            return prefix + _HTTP[exc.status]
        if exc.status >= 500:
            return prefix + "Pixazo failed on its side. " + _when(exc.retry_after,
                                                                  "You may try again in a minute.")
        return prefix + "Pixazo refused the request. Retrying the same request will probably not help."
    if isinstance(exc, UpstreamJobTimeoutError):
        last = f"still {exc.state}" if exc.state else "not answering on its status route"
        return (
            f"Pixazo's queue job was {last} after {exc.bound_s:g} seconds, so the server stopped waiting "
            "for it. The job may still finish at Pixazo, and be charged, but this server will not fetch its "
            "image: the operator can find the job by this generation's id (its record keeps Pixazo's "
            "request id). Check list_generations before trying again."
        )
    if isinstance(exc, UpstreamTimeoutError):
        return (
            f"Pixazo did not answer within {timeout_s:g} seconds. The image may still have been made and "
            "billed; check list_generations before trying again."
        )
    if isinstance(exc, UpstreamProtocolError):
        return f"Pixazo sent an answer the server could not use ({exc}). You may try again."
    if isinstance(exc, UpstreamJobError):
        if exc.state == "UNKNOWN":
            return ("Pixazo's status route no longer knows this queue job (HTTP 404), so its result cannot "
                    "be fetched. Check list_generations before trying again.")
        if exc.state == "ERROR":
            return ("Pixazo's job ended in a system error on its side (not charged). "
                    "You may try again in a minute.")
        return ("Pixazo's job failed: the model could not make this image (it may have been charged). "
                "Check the input image and arguments before trying again.")
    if isinstance(exc, UpstreamConnectionError):
        if exc.sent:
            return (
                "The connection to Pixazo broke after the request was sent; the image may have been made. "
                "Check list_generations before trying again."
            )
        return "The server could not reach Pixazo. Try again in a minute."
    return INTERNAL


CHARGE_PHRASES = (" (it may have been charged)", " (not charged)", ", and be charged,")


def without_charges(message: str) -> str:
    """A message without what it says about charges (the demo's simulator charges nothing)."""
    for phrase in CHARGE_PHRASES:
        message = message.replace(phrase, "")
    return message
