"""The Starlette app: /healthz, the MCP transports, and the lifespan that owns every resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.core.costs import Prices
from app.core.state import open_state
from app.errors import BlobStoreError
from app.identity.oauth import AuthorizationServer
from app.identity.signin import SignInPage
from app.identity.sso import OpenIDSignOn
from app.identity.tokens import ConfigError, TeamTokenVerifier, check_exposure, load_tokens
from app.pixazo.simulator import Simulator
from app.protocol.server import Runtime, build_server
from app.settings import Settings, weak_secret
from app.storage.database import engine_of, password_of
from app.storage.oauth_records import OAuthRecords
from app.web.gallery import Gallery, image_cache_headers, session_middleware, stored_image, unauthorized
from app.web.guards import FormBodyLimit, NormalizeBearer, UniqueVary
from app.web.session_caps import SessionCaps
from app.web.signed import signed_routes
from app.web.throttle import AuthThrottle, FailedAuthTracker
from app.web.uploads import upload_routes

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: a foreign Host gets 421, a foreign Origin 403.

    Loopback names unless PIXAZO_ALLOWED_HOSTS / PIXAZO_ALLOWED_ORIGINS say otherwise; a bare host
    name also admits it with any port.
    """
    hosts = list(LOOPBACK_HOSTS)
    if settings.allowed_hosts:
        hosts = []
        for host in settings.allowed_hosts:
            hosts.append(host)
            if ":" not in host.replace("[", "").replace("]", "") or host.endswith("]"):
                hosts.append(f"{host}:*")
    origins = list(settings.allowed_origins) or list(LOOPBACK_ORIGINS)
    if settings.public_url:
        # The public name is always ours: browsers reach the sign-in page and clients /mcp by it.
        public = urlsplit(settings.public_url)
        hosts.append(public.netloc)
        origins.append(f"{public.scheme}://{public.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=origins,
    )


# The MCP transports check Host and Origin themselves; probes must reach /healthz by any name
# (Kubernetes sends the pod's IP as Host).
UNGUARDED_PATHS = ("/healthz", "/mcp", "/sse", "/messages/")


class HostGuard:
    """DNS-rebinding protection for our own routes (gallery, images, metrics), with the same lists and
    answers as the SDK gives /mcp: a foreign Host gets 421, a foreign Origin 403."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(UNGUARDED_PATHS):
            refusal = await self.check.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def demo_simulator(settings: Settings) -> Simulator:
    """The demo's Pixazo: on the port after the server's, so that images made before a restart (their
    Pixazo URLs point at it; its images are drawn from their names) still load and can be edited."""
    port = settings.port + 1 if 0 < settings.port < 65535 else 0
    sim = Simulator(latency=2.0, host="127.0.0.1", port=port)
    try:
        await sim.start()
    except OSError:
        logger.warning("demo mode: port %d is taken; the simulator takes a free one (earlier demo images' "
                       "Pixazo links will not load after a restart)", port)
        await sim.stop()
        sim = Simulator(latency=2.0)
        await sim.start()
    return sim


async def start_demo(settings: Settings, stack: AsyncExitStack) -> Settings:
    """The demo's simulator, stopped with `stack`, and the settings that point the server at it."""
    sim = await demo_simulator(settings)
    stack.push_async_callback(sim.stop)
    logger.warning("demo mode: generating with the built-in Pixazo simulator at %s", sim.url)
    return settings.model_copy(update={
        "base_url": sim.url, "api_key": settings.api_key or SecretStr("demo-key"),
        "allowed_image_hosts": [*settings.allowed_image_hosts, sim.host],
    })


def demo_link_base(settings: Settings) -> str | None:
    """The HTTP demo's own address for signed links when there is no PIXAZO_PUBLIC_URL: its simulator
    fetches an upload to edit from this machine, as Pixazo would from the public address."""
    if not settings.demo or settings.public_url:
        return None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104 - compared, not bound
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def create_app(settings: Settings) -> Starlette:
    """The whole server. Raises ConfigError when the settings would expose it unsafely."""
    tokens = load_tokens(settings)
    Prices.load(settings)  # a bad PIXAZO_PRICES_FILE stops the start with one line (exit 2)
    # (build_server below reads PIXAZO_STYLES_FILE: a bad one stops the start the same way.)
    try:
        engine = engine_of(settings.database)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.session_secret is not None and (
            problem := weak_secret(settings.session_secret.get_secret_value())) is not None:
        # It signs gallery sessions: a guessable one lets anyone sign in as any caller.
        raise ConfigError(f"PIXAZO_SESSION_SECRET {problem}: generate one with `openssl rand -hex 32`")
    if engine == "postgresql" and settings.session_secret is None:
        # Replicas share gallery sessions: a per-process key would log people out at every hop.
        raise ConfigError("PIXAZO_SESSION_SECRET must be set when PIXAZO_DATABASE_URL is PostgreSQL "
                          "(every replica signs gallery sessions with it)")
    runtime = Runtime()

    def oauth_records() -> OAuthRecords:
        if runtime.state is None:
            raise RuntimeError("the server is not running")
        return runtime.state.store.oauth()

    oauth = AuthorizationServer(settings, oauth_records) if settings.public_url else None
    sso = OpenIDSignOn(settings, f"{oauth.issuer}/oauth/sso/callback") if oauth and settings.oidc_issuer else None
    if oauth is not None and not tokens and sso is None:
        raise ConfigError("PIXAZO_PUBLIC_URL needs a way to sign in: PIXAZO_AUTH_TOKENS or PIXAZO_OIDC_ISSUER")
    # With the authorization server on, every route needs a credential even without static tokens.
    notice = check_exposure(settings, tokens) if oauth is None else None
    verifier = TeamTokenVerifier(tokens) if tokens or oauth is not None else None
    mcp = build_server(settings, runtime, verifier, oauth)
    gallery = Gallery(runtime, verifier)
    security = transport_security(settings)
    # Behind a round-robin balancer a 2025-11-25 session would live in one replica only: stateless,
    # each legacy POST stands alone (2026-07-28 requests are sessionless whatever this says).
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security,
                                      host=settings.host, stateless_http=settings.legacy_stateless,
                                      max_sessions=settings.max_sessions,
                                      session_idle_timeout=settings.session_idle_timeout_s)
    sse_app = mcp.sse_app(sse_path="/sse", message_path="/messages/", transport_security=security,
                          host=settings.host)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            effective = settings
            if settings.demo:
                effective = await start_demo(settings, stack)
            elif settings.api_key is None:
                logger.warning("PIXAZO_API_KEY is not set: pix_generate will fail until it is")
            runtime.state = await stack.enter_async_context(open_state(effective, link_base=demo_link_base(settings)))
            if oauth is not None:
                await stack.enter_async_context(oauth.running())
                logger.info("OAuth authorization server on: issuer %s, resource %s", oauth.issuer, oauth.resource)
            await stack.enter_async_context(mcp.session_manager.run())
            if settings.history_visibility == "own" and verifier is not None and not settings.operators:
                logger.warning("PIXAZO_HISTORY_VISIBILITY=own and no PIXAZO_OPERATORS: /metrics answers nobody "
                               "and /healthz gives its status only")
            if notice:
                logger.warning(notice)
            else:
                logger.info("bearer tokens required; %d caller(s) configured", len(tokens))
            yield {}
            runtime.state = None

    def http_session() -> Any:
        if runtime.state is None:
            raise RuntimeError("the server is not running")
        return runtime.state.http

    async def healthz(request: Request) -> JSONResponse:
        """Whether a generation could be recorded now: reads answer and a write can commit.

        Anyone (a probe) gets the status alone; an operator's credential adds the details (version,
        engine, breaker, queue, whether a key is set), which tell an attacker what to aim at."""
        state = runtime.state
        problem: str | None = "not started"
        if state is not None:
            try:
                problem = await state.store.write_problem()
                if problem is None and not await state.store.ping():  # pragma: no cover - SELECT 1 answers
                    problem = "reads fail"
            except Exception as exc:  # noqa: BLE001 - any database failure means "not healthy"
                problem = f"the database failed ({type(exc).__name__})"
        draining = state is not None and state.service.draining
        storage = "closed"
        if state is not None:
            try:
                await state.service.images.blobs.check()
                storage = "ok"
            except BlobStoreError as exc:
                storage = str(exc)
        # Storage that cannot be written makes the server degraded, not down: calls still generate and
        # answer with Pixazo's URL (DOWNLOAD_FAILED), which beats no answer, so the probe stays 200.
        status = "ok" if storage == "ok" else "degraded"
        body: dict[str, Any] = {
            "status": "draining" if draining else (status if problem is None else "unavailable"),
            "database": problem or "ok", "database_engine": engine, "image_storage": storage, "version": __version__,
        }
        code = 200 if problem is None and not draining else 503
        if not await operator(request):
            return JSONResponse({"status": body["status"]}, status_code=code, headers={"Cache-Control": "no-store"})
        if state is not None:
            service = state.service
            body["breaker"] = {"state": service.breaker.state, "consecutive_failures": service.breaker.failures,
                               "retry_in_s": round(service.breaker.retry_in(), 1)}
            body["in_flight"] = service.cap.in_flight
            body["queued"] = service.cap.waiting
            body["api_key_configured"] = service.client.has_key
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    async def operator(request: Request) -> bool:
        """A verified caller who may see the whole server (Settings.is_operator); everyone without tokens."""
        if verifier is None:
            return True
        header = request.headers.get("authorization")
        caller = await verifier.caller_for_header(header) if header else None
        return caller is not None and settings.is_operator(caller)

    async def metrics(request: Request) -> Response:
        if verifier is not None:
            caller = await verifier.caller_for_header(request.headers.get("authorization"))
            if caller is None:
                return unauthorized()
            if not settings.is_operator(caller):
                # Under `own` the counters name other callers and their spend: operators only.
                return JSONResponse({"error": "insufficient_scope", "error_description": (
                    "/metrics is for operators (PIXAZO_OPERATORS) under PIXAZO_HISTORY_VISIBILITY=own")},
                    status_code=403, headers={"Cache-Control": "no-store"})
        state = runtime.state
        if state is None:
            return PlainTextResponse("not ready", status_code=503)
        service = state.service
        service.metrics.breaker.state(service.breaker.state)
        service.metrics.breaker_failures.set(service.breaker.failures)
        # Per-caller counters: never for a shared cache.
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    async def image(request: Request) -> Response:
        if not await gallery.allowed(request):  # a bearer token, or the gallery's session
            return unauthorized()
        state = runtime.state
        gen = await gallery.generation(request)
        if state is None or gen is None or not gen.image_path or not gen.image_mime:
            return PlainTextResponse("not found", status_code=404)
        images = state.service.images
        headers = {**image_cache_headers(verifier is not None), "ETag": f'"{gen.image_sha256}"',
                   "X-Content-Type-Options": "nosniff"}
        return stored_image(images, gen, headers)

    sessions = [session_middleware(settings)]
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/images/{id}", image, methods=["GET"], middleware=sessions),
        # Signed links exist for Pixazo to fetch inputs at our public address; without one, none are made
        # and none are served (but in the demo, whose simulator fetches them on this machine).
        *(signed_routes(runtime) if settings.public_url or demo_link_base(settings) else []),
        *upload_routes(runtime),
        *gallery.routes(sessions),
        *(oauth.routes() if oauth is not None else []),
        *(SignInPage(oauth.provider, verifier if tokens else None, sso, http_session).routes()
          if oauth is not None else []),
        # The legacy HTTP+SSE transport: its sub-app matches the full paths itself.
        Route("/sse", endpoint=sse_app, methods=["GET"]),
        Route("/messages/", endpoint=sse_app, methods=["POST"]),
        Mount("/", app=mcp_app),
    ]
    async def caller_of(authorization: str | None) -> str | None:
        return await verifier.caller_for_header(authorization) if verifier is not None else None

    def session_alive(session_id: str) -> bool:
        # The SDK forgets a legacy session on DELETE and after its idle timeout; it offers no public
        # way to ask, so this reads its table (pinned: mcp>=2.3,<3).
        return session_id in mcp.session_manager._server_instances

    tracker = FailedAuthTracker(settings.auth_failure_limit, settings.auth_block_max_s)
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(UniqueVary),
        Middleware(NormalizeBearer),
        Middleware(AuthThrottle, tracker=tracker),
        Middleware(HostGuard, security=security),
        Middleware(FormBodyLimit, max_bytes=settings.max_form_bytes, timeout_s=settings.header_timeout_s),
        Middleware(SessionCaps, caller_of=caller_of, alive=session_alive, per_caller=settings.max_sessions_per_caller,
                   total=settings.max_sessions, auth_required=verifier is not None),
    ])
    app.state.runtime = runtime
    db_password = password_of(settings.database)
    app.state.secrets = [*tokens.values(), *(
        [settings.api_key.get_secret_value()] if settings.api_key is not None else []), *(
        [settings.oidc_client_secret.get_secret_value()] if settings.oidc_client_secret is not None else []), *(
        [settings.aws_secret_access_key.get_secret_value()] if settings.aws_secret_access_key is not None else []),
        *([db_password] if db_password else [])]
    return app
