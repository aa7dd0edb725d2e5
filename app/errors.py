"""Our exception tree. Lower layers translate foreign errors into these at their boundary.

    PixazoMCPError
    ├── UpstreamError                 the gateway call failed
    │   ├── UpstreamHTTPError         answered 4xx/5xx (status, upstream message)
    │   ├── UpstreamProtocolError     answered 2xx with something unusable
    │   ├── UpstreamConnectionError   no connection, or it broke
    │   ├── UpstreamTimeoutError      no answer within the budget
    │   │   └── UpstreamJobTimeoutError   a queue job still running when our bound passed
    │   └── UpstreamJobError          a queue job ended FAILED or ERROR, or Pixazo does not know it
    ├── DownloadError                 the image could not be kept (refused or failed)
    ├── BlobStoreError                the image storage failed (disk full, read-only, object store down)
    │   └── BlobNotFoundError         no object under that key
    └── NotFoundError                 no such generation

Messages of these exceptions are for operators (rows' `upstream_error`, logs); they never hold the
key. What a caller reads comes from the catalogue in `app.core.messages`.
"""

from __future__ import annotations


class PixazoMCPError(Exception):
    """Base of every error this package raises on purpose."""


class UpstreamError(PixazoMCPError):
    """A call to Pixazo did not give an image URL."""


class UpstreamHTTPError(UpstreamError):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class UpstreamProtocolError(UpstreamError):
    """Pixazo answered with a success code but not with a usable body.

    The message is ours (a caller may read it); `detail` holds what Pixazo sent, for operators only.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class UpstreamConnectionError(UpstreamError):
    """The connection could not be made or broke. `sent` says whether the request left us."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamTimeoutError(UpstreamError):
    """No complete answer within the attempt's budget."""


class UpstreamJobTimeoutError(UpstreamTimeoutError):
    """A queue job had not ended when our bound passed (the call's deadline, or PIXAZO_JOB_RESUME_S for a
    resumed job). The job may still finish at Pixazo, and be charged: `request_id` finds it."""

    def __init__(self, request_id: str, state: str | None, bound_s: float) -> None:
        super().__init__(f"job {request_id} still {state or 'not polled successfully'} after {bound_s:g} s")
        self.request_id = request_id
        self.state = state  # the last state a poll reported; None when no poll succeeded
        self.bound_s = bound_s


class UpstreamJobError(UpstreamError):
    """A queue job ended without an image. `state` is FAILED or ERROR (ERROR: "not charged", see
    gateway.NOT_CHARGED_STATES), or UNKNOWN when the status route answered 404 for the job; the message
    is Pixazo's words, for operators."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(f"job {state}: {message}")
        self.state = state
        self.message = message


class DownloadError(PixazoMCPError):
    """The image could not be copied into local storage; the message says why, for the caller too."""


class BlobStoreError(PixazoMCPError):
    """A storage backend could not read or write an object. The message names no internal path."""


class BlobNotFoundError(BlobStoreError):
    """No object is stored under the key."""


class NotFoundError(PixazoMCPError):
    """No generation with that id."""
