"""Every status a generation's row can have, in one place: what it means for the caller, and whether
it is final. A row is PENDING while its call (or its upload link) is live; every other status is final.
HTTP_<code> rows (Pixazo answered that code) are a family: see `is_known`."""

from __future__ import annotations

import re

PENDING = "PENDING"

STATUSES: dict[str, str] = {
    "PENDING": "in flight: waiting, in the background (pix_wait collects it), or an upload link not yet used",
    "SUCCESS": "the image was made and kept",
    "DOWNLOAD_FAILED": "the image was made but could not be kept (its Pixazo URL is in the row)",
    "EXCEPTION": "the call failed in a way Pixazo did not explain (a broken answer, no key, an internal error)",
    "TIMEOUT": "no answer in time, or no free slot in time",
    "CANCELLED": "the caller cancelled it (before the early answer, or with pix_cancel)",
    "INTERRUPTED": "the server stopped before the call ended",
    "UNAVAILABLE": "the circuit breaker was open: nothing was sent",
    "RATE_LIMITED": "over a limit (per minute, per day, unfinished generations): nothing was sent",
    "BUDGET_EXCEEDED": "over the caller's daily budget: nothing was sent",
    "EXPIRED": "an upload link that expired unused",
    "JOB_FAILED": "Pixazo's queue job failed (it may be charged)",
    "JOB_ERROR": "Pixazo's queue job ended in error (not charged)",
    "JOB_UNKNOWN": "Pixazo no longer knew the queue job",
}
KNOWN_STATUSES = frozenset(STATUSES)
HTTP_STATUS = re.compile(r"HTTP_[1-5][0-9][0-9]")


def is_known(status: str) -> bool:
    return status in KNOWN_STATUSES or HTTP_STATUS.fullmatch(status) is not None


def is_final(status: str) -> bool:
    return status != PENDING
