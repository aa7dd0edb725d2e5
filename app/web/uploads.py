"""/upload/{token}: the one-time upload link a caller asked for (pix_upload_link), for a person.

No credentials: the token is the permission (app.core.uploads). GET is a small page (a file picker,
drag and drop, a paste target) that sends the file with PUT; PUT takes the raw body (`curl -T`), POST
a multipart form with the field `file` (the page without JavaScript). A refusal says why with its
status: 410 used or expired, 413 too large (as the bytes stream in, or from the declared length),
415 not a PNG, JPEG or WebP by its bytes, 422 over the pixel cap or not decoding. The token is in
the path: the answers are never cached and send no referrer.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.core.uploads import DEAD_LINK, UPLOAD_PATH, UploadError, Uploads
from app.protocol.server import Runtime
from app.web.gallery import TEMPLATES

FORM_OVERHEAD = 64 * 1024  # a multipart body's boundaries and headers around the file


def _headers(nonce: str = "") -> dict[str, str]:
    return {
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
                                    "img-src blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                    "base-uri 'none'"),
    }


def upload_routes(runtime: Runtime) -> list[Route]:
    def uploads() -> Uploads | None:
        state = runtime.state
        return state.uploads if state is not None else None

    def page(request: Request, status: int = 200, done: int | None = None, error: str | None = None) -> Response:
        nonce = secrets.token_urlsafe(16)
        found = uploads()
        return TEMPLATES.TemplateResponse(request, "upload.html", {
            "nonce": nonce, "done": done, "error": error,
            "max_mb": round((found.max_bytes if found else 0) / 1024 / 1024),
        }, status_code=status, headers=_headers(nonce))

    def refused(request: Request, exc: UploadError) -> Response:
        # Connection: close: the rest of a refused body is never read.
        if "text/html" in request.headers.get("accept", ""):
            response = page(request, exc.status, error=exc.message)
        else:
            response = JSONResponse({"error": exc.message}, status_code=exc.status, headers=_headers())
        response.headers["Connection"] = "close"
        return response

    async def show(request: Request) -> Response:
        found = uploads()
        if found is not None and not await found.live(request.path_params["token"]):
            return page(request, 410, error=DEAD_LINK)
        return page(request)

    async def receive(request: Request, chunks: AsyncIterator[bytes]) -> Response:
        found = uploads()
        if found is None:
            return JSONResponse({"error": "not ready"}, status_code=503)
        try:
            gen = await found.receive(request.path_params["token"], chunks)
        except UploadError as exc:
            return refused(request, exc)
        if "text/html" in request.headers.get("accept", "") and request.method == "POST":
            return page(request, 201, done=gen.id)
        return JSONResponse({"id": gen.id, "status": gen.status, "bytes": gen.image_bytes, "sha256": gen.image_sha256,
                             "mime": gen.image_mime, "resource_uri": gen.resource_uri}, status_code=201,
                            headers=_headers())

    def too_large(request: Request) -> UploadError | None:
        found = uploads()
        length = request.headers.get("content-length")
        limit = (found.max_bytes if found else 0) + (FORM_OVERHEAD if request.method == "POST" else 0)
        if length is not None and (not length.isdigit() or int(length) > limit):
            return UploadError(413, f"The image is larger than {found.max_bytes if found else 0} bytes.")
        return None

    async def put(request: Request) -> Response:
        if (problem := too_large(request)) is not None:
            return refused(request, problem)
        return await receive(request, request.stream())

    async def post(request: Request) -> Response:
        if (problem := too_large(request)) is not None:
            return refused(request, problem)
        if request.headers.get("content-length") is None:
            return refused(request, UploadError(411, "Send the form with a Content-Length."))
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if file is None or isinstance(file, str):
            return refused(request, UploadError(400, "The form needs a file in its field `file`."))

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await file.read(64 * 1024):
                yield chunk

        return await receive(request, chunks())

    return [Route(UPLOAD_PATH, show, methods=["GET"]), Route(UPLOAD_PATH, put, methods=["PUT"]),
            Route(UPLOAD_PATH, post, methods=["POST"])]
