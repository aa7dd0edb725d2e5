"""The team's web gallery: server-rendered pages over the same record the tools read.

Open on loopback when no tokens are configured (like the rest of the server); otherwise a token is
asked once at /login and kept in a signed, HttpOnly, SameSite=Strict session cookie.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.batches import grouped
from app.core.costs import usd
from app.core.lineage import ancestors, lineage
from app.core.uploads import UPLOAD_PATH
from app.errors import NotFoundError
from app.identity.sessions import SESSION_TTL_S, end_session, session_caller, start_session
from app.identity.tokens import TeamTokenVerifier
from app.net import is_http_url
from app.protocol.icons import data_uri
from app.protocol.server import Runtime
from app.settings import Settings
from app.storage.images import ImageStore
from app.storage.records import Generation, parse_generation_id

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals["server_icon"] = data_uri("server")  # the same icon as the MCP server's
# `{% if url is http_url %}`: a link only for http(s), whatever an old row holds.
TEMPLATES.env.tests["http_url"] = is_http_url


UNKNOWN_COST = "\N{EN DASH}"  # what the pages show for any unknown value


def cost_text(value: float | None) -> str:
    """A row's cost for people: `free` when nothing was charged, a dash when unknown, else `$0.07`."""
    if value is None:
        return UNKNOWN_COST
    return "free" if value == 0 else usd(value)


def total_cost(group: list[Generation]) -> float | None:
    """A batch's cost: the sum of its images', unknown when any is."""
    costs = [gen.cost_usd for gen in group]
    return None if None in costs else sum(c for c in costs if c is not None)


TEMPLATES.env.filters["cost"] = cost_text
TEMPLATES.env.filters["total_cost"] = total_cost
PAGE_SIZE = 24
SESSION_KEY = "sid"  # the session's id (app.identity.sessions); the cookie holds nothing else


# Pages render only our own markup, images and one inline script: nothing else may load or frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                "script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes form posts say "Origin: null"
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to the gallery's HTML responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    for name, value in SECURITY_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def stored_image(images: ImageStore, gen: Generation, headers: dict[str, str]) -> Response:
    """A generation's stored image: a file sent by the server when the store has one on disk, else the
    object store's bytes streamed through. The caller checked that the row has an image."""
    assert gen.image_path is not None  # noqa: S101 - callers check first
    path = images.path_of(gen.image_path)
    if path is not None:
        return FileResponse(path, media_type=gen.image_mime, headers=headers)
    if gen.image_bytes is not None:
        headers = {**headers, "Content-Length": str(gen.image_bytes)}
    return StreamingResponse(images.stream(gen.image_path), media_type=gen.image_mime, headers=headers)


def image_cache_headers(private: bool) -> dict[str, str]:
    """Stored images never change (their names carry their hash), so they may be kept a year; but an
    image that needed credentials must never sit in a shared cache (a proxy would hand it to anyone)."""
    if not private:
        return {"Cache-Control": "public, max-age=31536000, immutable"}
    return {"Cache-Control": "private, max-age=31536000, immutable", "Vary": "Authorization, Cookie"}


def unauthorized() -> Response:
    """What a request without a valid token (or gallery session) gets, on every protected route."""
    return JSONResponse({"error": "invalid_token", "error_description": "Authentication required"},
                        status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def session_middleware(settings: Settings) -> Middleware:
    # Without PIXAZO_SESSION_SECRET sessions are signed with a per-process key: a restart logs people out.
    secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_urlsafe(32)
    return Middleware(SessionMiddleware, secret_key=secret, session_cookie="pixazo_session", max_age=SESSION_TTL_S,
                      same_site="strict", https_only=settings.secure_cookies)


class Gallery:
    def __init__(self, runtime: Runtime, verifier: TeamTokenVerifier | None) -> None:
        self.runtime = runtime
        self.verifier = verifier

    async def caller(self, request: Request) -> str | None:
        """The signed-in caller, or a caller named by a bearer token (for scripts)."""
        if self.verifier is None:
            return None
        session_id = request.session.get(SESSION_KEY) if "session" in request.scope else None
        state = self.runtime.state
        if isinstance(session_id, str) and state is not None:
            name = await session_caller(state.store, session_id, self.verifier.callers)
            if name is not None:
                return name
            request.session.clear()  # logged out, expired, or its caller was removed
        return await self.verifier.caller_for_header(request.headers.get("authorization"))

    async def allowed(self, request: Request) -> bool:
        return self.verifier is None or await self.caller(request) is not None

    async def generation(self, request: Request) -> Generation | None:
        """The generation the path's {id} names, if there is one the requester may see."""
        state = self.runtime.state
        gen_id = parse_generation_id(request.path_params["id"])
        if state is None or gen_id is None:
            return None
        try:
            return await state.service.get(gen_id, await self.caller(request))
        except NotFoundError:
            return None

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)

    async def index(self, request: Request) -> Response:
        signed_in = await self.caller(request)
        if self.verifier is not None and signed_in is None:
            return self._login_redirect(request)
        state = self.runtime.state
        if state is None:
            return Response("starting", status_code=503)
        q = request.query_params
        query = (q.get("q") or "").strip()[:200] or None
        status = (q.get("status") or "").strip()[:40] or None
        caller = (q.get("caller") or "").strip()[:64] or None
        before_id = parse_generation_id(q.get("before"))
        items = await state.service.page(signed_in, limit=PAGE_SIZE, status=status, query=query,
                                         before_id=before_id, caller=caller)
        callers, statuses = await state.service.callers_and_statuses(signed_in)
        next_before = items[-1].id if len(items) == PAGE_SIZE else None
        return TEMPLATES.TemplateResponse(request, "index.html", {
            "items": items, "groups": grouped(items), "query": query or "", "status": status or "",
            "caller": caller or "",
            "callers": callers, "statuses": statuses, "next_before": next_before, "before": before_id,
            "signed_in": signed_in, "auth": self.verifier is not None,
        })

    async def detail(self, request: Request) -> Response:
        signed_in = await self.caller(request)
        if self.verifier is not None and signed_in is None:
            return self._login_redirect(request)
        gen = await self.generation(request)
        state = self.runtime.state
        if gen is None or state is None:
            return TEMPLATES.TemplateResponse(request, "missing.html", {"id": request.path_params["id"]},
                                              status_code=404)
        # The chain: ancestors walked up from the parent (bounded; stops at a row the viewer may not
        # see), oldest first on the page, then the children, newest first.
        chain = list(reversed(await ancestors(state.service, gen, signed_in)))
        found = await lineage(state.service, gen, signed_in)
        return TEMPLATES.TemplateResponse(request, "detail.html", {
            "gen": gen, "parameters_json": json.dumps(gen.parameters, indent=2, ensure_ascii=False, sort_keys=True),
            "signed_in": signed_in, "auth": self.verifier is not None,
            "chain": chain, "chain_cut": (chain[0] if chain else gen).parent_id is not None,
            "children": found.children, "more_children": found.more_children,
        })

    async def login_form(self, request: Request) -> Response:
        if self.verifier is None:
            return RedirectResponse("/gallery", status_code=303)
        return TEMPLATES.TemplateResponse(request, "login.html", {
            "error": None, "next": _safe_next(request.query_params.get("next")), "auth": self.verifier is not None})

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = form.get("token")
        target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
        name = None
        if self.verifier is not None and isinstance(token, str) and token:
            found = await self.verifier.verify_token(token.strip())
            name = found.client_id if found else None
        state = self.runtime.state
        if name is None or state is None:
            return TEMPLATES.TemplateResponse(request, "login.html", {
                "error": "That token is not valid.", "next": target, "auth": self.verifier is not None},
                status_code=401)
        request.session.clear()
        request.session[SESSION_KEY] = await start_session(state.store, name)
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        session_id = request.session.get(SESSION_KEY)
        state = self.runtime.state
        if isinstance(session_id, str) and state is not None:
            await end_session(state.store, session_id)  # a copy of the cookie opens nothing any more
        request.session.clear()
        return RedirectResponse("/login" if self.verifier is not None else "/", status_code=303)

    async def thumbnail(self, request: Request) -> Response:
        if not await self.allowed(request):
            return unauthorized()
        state = self.runtime.state
        gen = await self.generation(request)
        if state is None or gen is None or not gen.image_path:
            return Response("not found", status_code=404, media_type="text/plain")
        data = await state.service.images.thumbnail(gen.image_path)
        return Response(data, media_type="image/jpeg", headers={
            **image_cache_headers(self.verifier is not None), "X-Content-Type-Options": "nosniff"})

    def routes(self, sessions: list[Middleware]) -> list[Route]:
        middleware = [*sessions, Middleware(SecurityHeaders)]
        return [
            Route("/", self.index, methods=["GET"], middleware=middleware),
            Route("/gallery", self.index, methods=["GET"], middleware=middleware),
            Route("/gallery/{id}", self.detail, methods=["GET"], middleware=middleware),
            Route("/login", self.login_form, methods=["GET"], middleware=middleware),
            Route("/login", self.login, methods=["POST"], middleware=middleware),
            Route("/logout", self.logout, methods=["GET", "POST"], middleware=middleware),
            Route("/images/{id}/thumb", self.thumbnail, methods=["GET"], middleware=middleware),
            Route("/gallery/upload", self.upload, methods=["POST"], middleware=middleware),
        ]

    async def upload(self, request: Request) -> Response:
        """A fresh one-time upload link for the signed-in caller, and the way to it. (The session cookie is
        SameSite=Strict: another site cannot make a signed-in browser ask for one.)"""
        signed_in = await self.caller(request)
        if self.verifier is not None and signed_in is None:
            return self._login_redirect(request)
        state = self.runtime.state
        if state is None or state.uploads is None:
            return Response("starting", status_code=503)
        made = await state.uploads.create_link(signed_in)
        if isinstance(made, str):
            return Response(made, status_code=429, media_type="text/plain")
        return RedirectResponse(UPLOAD_PATH.format(token=made.token), status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a local path: never an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/gallery"

