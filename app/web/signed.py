"""GET /signed/{id}: one stored image for whoever holds a valid signed link (Pixazo, fetching an input).

No credentials: the signature is the permission (see app.core.links). An expired, altered or
other-image link gets the same 403, saying nothing about which. The answer may be cached privately
for no longer than the link lives. The query string is the credential: it is never logged (uvicorn's
access log is off; nothing here logs the request).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.protocol.server import Runtime
from app.storage.records import MAX_ID, MIN_ID
from app.web.gallery import stored_image


def forbidden() -> Response:
    return PlainTextResponse("forbidden", status_code=403, headers={"Cache-Control": "no-store"})


def signed_routes(runtime: Runtime) -> list[Route]:
    async def signed_image(request: Request) -> Response:
        state = runtime.state
        raw = request.path_params["id"]
        if state is None:
            return PlainTextResponse("not ready", status_code=503)
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and MIN_ID <= int(raw) <= MAX_ID):
            return forbidden()
        gen_id = int(raw)
        left = state.inputs.links.seconds_left(gen_id, request.query_params.get("expires"),
                                               request.query_params.get("sig"))
        if left is None:
            return forbidden()
        gen = await state.store.get(gen_id)
        if gen is None or not gen.image_path or not gen.image_mime:
            return PlainTextResponse("not found", status_code=404, headers={"Cache-Control": "no-store"})
        images = state.service.images
        headers = {"Cache-Control": f"private, max-age={left}", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "ETag": f'"{gen.image_sha256}"'}
        return stored_image(images, gen, headers)

    return [Route("/signed/{id}", signed_image, methods=["GET", "HEAD"])]
