"""The server's own OAuth authorization server (on when PIXAZO_PUBLIC_URL is set).

Built on the SDK's `mcp.server.auth` pieces: its provider interface, its authorize / token /
register / revoke handlers and metadata models, and its bearer middleware on /mcp. Beyond them:
- client secrets, codes and tokens are stored hashed in the generations database (so replicas share
  them), which needs our own client authenticator (the SDK's compares plaintext secrets);
- Client ID Metadata Documents (the SDK has no server side for them), see app.identity.cimd;
- the RFC 8707 `resource` is checked at /authorize, bound into the code and the tokens, and checked
  again on the token request (the SDK's token handler ignores it on the code grant);
- RFC 9207 `iss` in every authorization response, and metadata that advertises it and CIMD;
- refresh tokens rotate, and a reused one revokes its whole family; a replayed code does too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    RegistrationError,
    TokenError,
    TokenVerifier,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken, ProtectedResourceMetadata
from pydantic import AnyHttpUrl, AnyUrl, ValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp

from app.identity import attempts
from app.identity.attempts import client_key
from app.identity.cimd import MetadataDocuments, MetadataDocumentUnavailable, is_metadata_url, requester
from app.identity.names import name_problem
from app.identity.redirects import redirect_uri_allowed
from app.identity.tokens import SCOPE, ConfigError, TeamTokenVerifier
from app.net import is_loopback
from app.settings import Settings
from app.storage.oauth_records import ACCESS, REFRESH, OAuthRecords, PendingRequest, digest

logger = logging.getLogger(__name__)

ACCESS_TTL_S = 3600
REFRESH_TTL_S = 30 * 86400
CODE_TTL_S = 300
REQUEST_TTL_S = 900
UNUSED_CLIENT_TTL_S = 86400  # a registered client nobody signed in with is forgotten after this
ACCESS_PREFIX = "pxa_"
REFRESH_PREFIX = "pxr_"
CODE_PREFIX = "pxc_"
SIGNIN_PATH = "/oauth/signin"
MAX_STATE_BYTES = 1024  # the client's `state`, kept with each pending sign-in
MAX_PENDING_PER_ADDRESS = 20  # pending sign-ins (each lives REQUEST_TTL_S) asked for from one address
MAX_PENDING_PER_CLIENT = 500  # and for one client, from everywhere


def canonical_url(url: str) -> str:
    """A URL as the SDK compares resources: parsed (host case, default port), no trailing slash."""
    return str(AnyHttpUrl(url)).removesuffix("/")


def same_resource(presented: str | None, ours: str) -> bool:
    if not presented:
        return False
    try:
        return canonical_url(presented) == canonical_url(ours)
    except ValidationError:
        return False


def public_urls(settings: Settings) -> tuple[str, str]:
    """(issuer, resource) from PIXAZO_PUBLIC_URL; raises ConfigError when it cannot be an issuer."""
    raw = (settings.public_url or "").strip().rstrip("/")
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError("PIXAZO_PUBLIC_URL must be an absolute URL like https://mcp.example.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError("PIXAZO_PUBLIC_URL must use https (plain http only on loopback, for tests)")
    return raw, raw + "/mcp"


class StoredCode(AuthorizationCode):
    family: str


class StoredRefreshToken(RefreshToken):
    family: str


class StoredAccessToken(AccessToken):
    family: str


class PixazoOAuthProvider(OAuthAuthorizationServerProvider[StoredCode, StoredRefreshToken, StoredAccessToken]):
    """The SDK's provider interface over OAuthRecords. Callers (team members) are the tokens' subjects."""

    def __init__(self, issuer: str, resource: str, records: Callable[[], OAuthRecords],
                 documents: MetadataDocuments) -> None:
        self.issuer = issuer
        self.resource = resource
        self._records = records
        self.documents = documents

    @property
    def records(self) -> OAuthRecords:
        return self._records()

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if is_metadata_url(client_id):
            # Not recorded here: a row per URL anyone names would grow without bound. It is recorded
            # once someone signs in through it (approve), for `pixazo-mcp oauth clients`.
            try:
                return await self.documents.client(client_id)
            except MetadataDocumentUnavailable:
                return None  # the authorization endpoint asks first and answers "try again" (routes)
        row = await self.records.client(client_id)
        if row is None:
            return None
        return OAuthClientInformationFull.model_validate({**row.metadata, "client_id": client_id})

    async def client_secret_sha256(self, client_id: str) -> str | None:
        row = await self.records.client(client_id)
        return row.secret_sha256 if row is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        uris = [str(u) for u in client_info.redirect_uris or []]
        bad = [u for u in uris if not redirect_uri_allowed(u)]
        if not uris or bad:
            raise RegistrationError("invalid_redirect_uri",
                                    f"redirect URIs must be https or http on loopback: {bad[0] if bad else '(none)'}")
        problem = name_problem(client_info.client_name)
        if problem is not None:
            raise RegistrationError("invalid_client_metadata", problem)
        # Housekeeping at the one open door: registrations nobody ever signed in with do not pile up.
        purged = await self.records.purge_unused_clients(UNUSED_CLIENT_TTL_S)
        if purged:
            logger.info("oauth: forgot %d client(s) nobody signed in with", purged)
        secret = client_info.client_secret
        metadata = client_info.model_dump(mode="json", exclude_none=True, exclude={"client_secret", "client_id"})
        await self.records.add_client(client_info.client_id, "dcr", client_info.client_name, metadata, secret)
        logger.info("oauth client registered: %s (%s)", client_info.client_id, client_info.client_name or "no name")

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        resource = params.resource or self.resource
        if not same_resource(resource, self.resource):
            raise AuthorizeError("invalid_target", f"this server issues tokens only for {self.resource}")
        scopes = params.scopes or [SCOPE]
        if any(s != SCOPE for s in scopes):
            raise AuthorizeError("invalid_scope", f"the only scope is {SCOPE}")
        address = requester.get()
        by_client, by_address = await self.records.pending_counts(client.client_id, address)
        if by_address >= MAX_PENDING_PER_ADDRESS or by_client >= MAX_PENDING_PER_CLIENT:
            logger.warning("oauth: sign-in refused: %d pending for client %s, %d from %s", by_client,
                           client.client_id, by_address, address)
            raise AuthorizeError("temporarily_unavailable",
                                 "too many sign-ins are waiting to be answered; try again in a few minutes")
        request_id = secrets.token_urlsafe(32)
        await self.records.add_request(request_id, client.client_id, {
            "state": params.state, "scopes": scopes, "code_challenge": params.code_challenge,
            "redirect_uri": str(params.redirect_uri),
            "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
            "resource": self.resource, "client_name": client.client_name,
        }, REQUEST_TTL_S, address)
        await self.records.touch_client(client.client_id, "asked to sign in")
        return f"{SIGNIN_PATH}?request={request_id}"

    async def approve(self, pending: PendingRequest, caller: str) -> str:
        """A code for `caller`; the URL to send the browser back to the client with it."""
        code = CODE_PREFIX + secrets.token_urlsafe(32)
        await self.records.add_code(code, pending.client_id, caller, pending.params, secrets.token_urlsafe(16),
                                    CODE_TTL_S)
        if is_metadata_url(pending.client_id) and await self.records.client(pending.client_id) is None:
            await self.records.add_client(pending.client_id, "cimd", pending.params.get("client_name"), {
                "redirect_uris": [pending.params["redirect_uri"]]}, None)
        await self.records.signed_in(pending.client_id)
        await self.records.touch_client(pending.client_id, f"signed in as {caller}")
        logger.info("oauth: %s approved client %s", caller, pending.client_id)
        return construct_redirect_uri(pending.params["redirect_uri"], code=code, state=pending.params["state"],
                                      iss=self.issuer)

    def refusal(self, pending: PendingRequest, error: str, description: str) -> str:
        return construct_redirect_uri(pending.params["redirect_uri"], error=error, error_description=description,
                                      state=pending.params["state"], iss=self.issuer)

    async def load_authorization_code(self, client: OAuthClientInformationFull,
                                      authorization_code: str) -> StoredCode | None:
        row = await self.records.code(authorization_code)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: a code used twice may have been stolen; what it gave is withdrawn.
            revoked = await self.records.revoke_family(row.family)
            await self.records.touch_client(client.client_id, "replayed a code: its tokens were revoked")
            logger.warning("oauth: code replayed by client %s; %d token(s) revoked", client.client_id, revoked)
            return None
        p = row.params
        return StoredCode(code=authorization_code, scopes=p["scopes"], expires_at=row.expires_at,
                          client_id=row.client_id, code_challenge=p["code_challenge"],
                          redirect_uri=AnyUrl(p["redirect_uri"]),
                          redirect_uri_provided_explicitly=p["redirect_uri_provided_explicitly"],
                          resource=p["resource"], subject=row.caller, family=row.family)

    async def exchange_authorization_code(self, client: OAuthClientInformationFull,
                                          authorization_code: StoredCode) -> OAuthToken:
        if not same_resource(authorization_code.resource, self.resource):
            raise TokenError("invalid_target", "this code was issued for another resource")
        if not await self.records.use_code(authorization_code.code):
            await self.records.revoke_family(authorization_code.family)
            raise TokenError("invalid_grant", "authorization code was already used")
        return await self._issue(client, authorization_code.subject or "", authorization_code.scopes,
                                 authorization_code.family, "tokens issued")

    async def _issue(self, client: OAuthClientInformationFull, caller: str, scopes: list[str], family: str,
                     event: str) -> OAuthToken:
        access = ACCESS_PREFIX + secrets.token_urlsafe(32)
        await self.records.add_token(access, ACCESS, client.client_id, caller, scopes, self.resource, family,
                                     ACCESS_TTL_S)
        refresh = None
        if "refresh_token" in client.grant_types:
            refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
            await self.records.add_token(refresh, REFRESH, client.client_id, caller, scopes, self.resource, family,
                                         REFRESH_TTL_S)
        await self.records.touch_client(client.client_id, f"{event} ({caller})")
        return OAuthToken(access_token=access, expires_in=ACCESS_TTL_S, scope=" ".join(scopes),
                          refresh_token=refresh)

    async def load_refresh_token(self, client: OAuthClientInformationFull,
                                 refresh_token: str) -> StoredRefreshToken | None:
        row = await self.records.token(refresh_token, REFRESH)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            # A rotated-away token came back: two parties hold this grant. End all of it.
            revoked = await self.records.revoke_family(row.family)
            await self.records.touch_client(client.client_id, "reused a refresh token: its tokens were revoked")
            logger.warning("oauth: refresh token reused by client %s; %d token(s) revoked", client.client_id,
                           revoked)
            return None
        if row.revoked_at is not None or row.expires_at <= time.time() or not same_resource(row.resource,
                                                                                             self.resource):
            return None
        return StoredRefreshToken(token=refresh_token, client_id=row.client_id, scopes=row.scopes,
                                  expires_at=int(row.expires_at), resource=row.resource, subject=row.caller,
                                  family=row.family)

    async def exchange_refresh_token(self, client: OAuthClientInformationFull, refresh_token: StoredRefreshToken,
                                     scopes: list[str]) -> OAuthToken:
        if not await self.records.use_refresh(refresh_token.token):
            await self.records.revoke_family(refresh_token.family)
            raise TokenError("invalid_grant", "refresh token already used")
        return await self._issue(client, refresh_token.subject or "", scopes, refresh_token.family, "refreshed")

    async def load_access_token(self, token: str) -> StoredAccessToken | None:
        if not token.startswith(ACCESS_PREFIX):
            return None
        row = await self.records.token(token, ACCESS)
        if row is None:
            return None
        if row.revoked_at is not None or row.expires_at <= time.time():
            attempts.stale()  # ours, once: a client that missed a refresh or a revocation, not a guesser
            return None
        attempts.verified()
        return StoredAccessToken(token=token, client_id=row.client_id, scopes=row.scopes,
                                 expires_at=int(row.expires_at), resource=row.resource, subject=row.caller,
                                 claims={"iss": self.issuer}, family=row.family)

    async def revoke_token(self, token: StoredAccessToken | StoredRefreshToken) -> None:
        count = await self.records.revoke_family(token.family)
        await self.records.touch_client(token.client_id, "revoked its tokens")
        logger.info("oauth: client %s revoked a grant (%d token(s))", token.client_id, count)


class HashedClientAuthenticator(ClientAuthenticator):
    """The SDK's client authentication, against the sha256 of the secret we keep instead of the secret."""

    provider: PixazoOAuthProvider

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        form = await request.form()
        client_id = form.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise AuthenticationError("Missing client_id")
        client = await self.provider.get_client(client_id)
        if client is None:
            raise AuthenticationError("Invalid client_id")
        method = client.token_endpoint_auth_method or "client_secret_post"
        presented: str | None = None
        if method == "none":
            return client
        if method == "client_secret_basic":
            header = request.headers.get("authorization", "")
            if not header.startswith("Basic "):
                raise AuthenticationError("Missing or invalid Basic authentication in Authorization header")
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except (ValueError, UnicodeDecodeError, binascii.Error):
                raise AuthenticationError("Invalid Basic authentication header") from None
            basic_id, sep, secret = decoded.partition(":")
            if not sep or unquote(basic_id) != client_id:
                raise AuthenticationError("Client ID mismatch in Basic auth")
            presented = unquote(secret)
        elif method == "client_secret_post":
            value = form.get("client_secret")
            presented = value if isinstance(value, str) else None
        else:
            raise AuthenticationError(f"Unsupported auth method: {method}")
        expected = await self.provider.client_secret_sha256(client_id)
        if not expected or not presented or not hmac.compare_digest(digest(presented), expected):
            raise AuthenticationError("Invalid client_secret")
        return client


def _expire(window: deque[float], now: float) -> deque[float]:
    """The window without what left the hour."""
    while window and now - window[0] >= 3600:
        window.popleft()
    return window


def _wait(window: deque[float], limit: int, now: float) -> float | None:
    """The seconds until `window` has room again, or None when it has."""
    _expire(window, now)
    return 3600 - (now - window[0]) if len(window) >= limit else None


class RegistrationLimit:
    """Sliding one-hour windows of registrations (DCR is open to anyone): per client address (IPv6 per
    /64, so one host cannot walk its prefix), and for all addresses together."""

    def __init__(self, per_hour: int, total_per_hour: int) -> None:
        self.per_hour = per_hour
        self.total_per_hour = total_per_hour
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def admit(self, address: str) -> float | None:
        """None when admitted, else the seconds until the next registration would be."""
        now = time.monotonic()
        if len(self._seen) > self.total_per_hour + 10_000:
            # Only admitted registrations fill windows, so at most total_per_hour of them are not empty.
            self._seen = {k: w for k, w in self._seen.items() if _expire(w, now)}
        key = client_key(address)
        window = self._seen.setdefault(key, deque())
        wait = _wait(window, self.per_hour, now)
        if wait is None:
            wait = _wait(self._all, self.total_per_hour, now)
        if wait is not None:
            return wait
        window.append(now)
        self._all.append(now)
        return None


class TeamOrOAuthVerifier(TokenVerifier):
    """/mcp accepts the team's static tokens and the access tokens we issued, side by side."""

    def __init__(self, team: TeamTokenVerifier | None, provider: PixazoOAuthProvider) -> None:
        self.team = team
        self.provider = provider

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.team is not None:
            found = await self.team.verify_token(token)
            if found is not None:
                # Static tokens are this server's own: they name its resource.
                return found.model_copy(update={"resource": self.provider.resource})
        return await self.provider.load_access_token(token)


def _limited(app: ASGIApp, methods: list[str]) -> ASGIApp:
    """CORS outermost (so a 413 carries it too) around a body limit, as the SDK wraps these endpoints."""
    return CORSMiddleware(app=RequestBodyLimitMiddleware(app, DEFAULT_MAX_REQUEST_BODY_SIZE), allow_origins="*",
                          allow_methods=methods, allow_headers=["mcp-protocol-version"])


def _oauth_error(error: str, description: str, status: int = 400, headers: dict[str, str] | None = None,
                 ) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})


class AuthorizationServer:
    """Everything OAuth: the provider, its routes, and what /mcp needs to accept its tokens."""

    def __init__(self, settings: Settings, records: Callable[[], OAuthRecords]) -> None:
        self.issuer, self.resource = public_urls(settings)
        self.documents = MetadataDocuments(settings.oauth_metadata_loopback_hosts, settings.oauth_ca_file, SCOPE)
        self.provider = PixazoOAuthProvider(self.issuer, self.resource, records, self.documents)
        self.registrations = RegistrationLimit(settings.oauth_registrations_per_hour,
                                               settings.oauth_registrations_total_per_hour)
        self.registration_options = ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE],
                                                              default_scopes=[SCOPE])

    def auth_settings(self) -> AuthSettings:
        # From strings: the settings keep a path-less issuer without a trailing slash (issuers compare as strings).
        return AuthSettings.model_validate({
            "issuer_url": self.issuer, "resource_server_url": self.resource, "required_scopes": [SCOPE],
            "client_registration_options": self.registration_options,
            "revocation_options": RevocationOptions(enabled=True), "validate_token_resource": True})

    def verifier(self, team: TeamTokenVerifier | None) -> TeamOrOAuthVerifier:
        return TeamOrOAuthVerifier(team, self.provider)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.documents:
            yield

    def metadata(self) -> dict[str, Any]:
        metadata = build_metadata(AnyHttpUrl(self.issuer), None, self.registration_options,
                                  RevocationOptions(enabled=True))
        methods = ["none", "client_secret_post", "client_secret_basic"]
        metadata.token_endpoint_auth_methods_supported = methods
        metadata.revocation_endpoint_auth_methods_supported = methods
        metadata.client_id_metadata_document_supported = True
        metadata.authorization_response_iss_parameter_supported = True
        # The issuer exactly as configured: clients compare it as a string (RFC 8414 §3.3, RFC 9207).
        return {**metadata.model_dump(mode="json", exclude_none=True), "issuer": self.issuer}

    def routes(self) -> list[Route]:
        provider = self.provider
        authenticator = HashedClientAuthenticator(provider)
        metadata = self.metadata()
        prm = ProtectedResourceMetadata.model_validate({
            "resource": self.resource, "authorization_servers": [self.issuer], "scopes_supported": [SCOPE],
            "resource_name": "pixazo-mcp"})
        prm_handler = ProtectedResourceMetadataHandler(prm)
        authorize_handler = AuthorizationHandler(provider)
        token_handler = TokenHandler(provider, authenticator)
        register_handler = RegistrationHandler(provider, self.registration_options)

        async def as_metadata(request: Request) -> Response:
            return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=3600"})

        async def authorize(request: Request) -> Response:
            params = request.query_params if request.method == "GET" else await request.form()
            state = params.get("state")
            # Every pending sign-in is a stored row: what the client makes us keep is bounded.
            if isinstance(state, str) and len(state.encode()) > MAX_STATE_BYTES:
                return _oauth_error("invalid_request", f"state is longer than {MAX_STATE_BYTES} bytes")
            requester.set(client_key(request.client.host if request.client else "unknown"))
            client_id = params.get("client_id")
            if isinstance(client_id, str) and is_metadata_url(client_id):
                try:
                    await self.documents.client(client_id)  # fetched (or not) once; the handler reads the cache
                except MetadataDocumentUnavailable:
                    return _oauth_error("temporarily_unavailable", "the client's metadata document cannot be "
                                        "fetched now; try again in a minute", 503, {"Retry-After": "30"})
            response = await authorize_handler.handle(request)
            location = response.headers.get("location")
            if location is not None and not location.startswith(SIGNIN_PATH):
                # RFC 9207: errors sent back to the client name us too (the sign-in page adds it itself).
                response.headers["location"] = construct_redirect_uri(location, iss=self.issuer)
            return response

        async def token(request: Request) -> Response:
            requester.set(client_key(request.client.host if request.client else "unknown"))
            form = await request.form()  # cached on the request: the SDK's handler reads the same
            resource = form.get("resource")
            if isinstance(resource, str) and not same_resource(resource, self.resource):
                # RFC 8707 §2: the SDK's handler would ignore it on the code grant.
                return _oauth_error("invalid_target", f"this server issues tokens only for {self.resource}")
            response: Response = await token_handler.handle(request)
            return response

        async def register(request: Request) -> Response:
            address = request.client.host if request.client else "unknown"
            wait = self.registrations.admit(address)
            if wait is not None:
                return _oauth_error("slow_down", "too many client registrations (from this address, or in all)", 429,
                                    {"Retry-After": str(max(1, round(wait)))})
            return await register_handler.handle(request)

        async def revoke(request: Request) -> Response:
            # RFC 7009, by hand: the SDK's handler demands a client_secret field even from public clients.
            try:
                client = await authenticator.authenticate_request(request)
            except AuthenticationError as exc:
                return _oauth_error("invalid_client", exc.message, 401)
            form = await request.form()
            token = form.get("token")
            if not isinstance(token, str) or not token:
                return _oauth_error("invalid_request", "token is required")
            found: StoredAccessToken | StoredRefreshToken | None = await provider.load_access_token(token)
            if found is None:
                found = await provider.load_refresh_token(client, token)
            if found is not None and found.client_id == client.client_id:
                await provider.revoke_token(found)
            # An unknown token gets 200 too (RFC 7009 §2.2): the answer tells nothing about it.
            return Response(status_code=200, headers={"Cache-Control": "no-store"})

        prm_endpoint = cors_middleware(prm_handler.handle, ["GET", "OPTIONS"])
        return [
            Route("/.well-known/oauth-authorization-server", cors_middleware(as_metadata, ["GET", "OPTIONS"]),
                  methods=["GET", "OPTIONS"]),
            Route("/.well-known/oauth-protected-resource/mcp", prm_endpoint, methods=["GET", "OPTIONS"]),
            Route("/.well-known/oauth-protected-resource", prm_endpoint, methods=["GET", "OPTIONS"]),
            # The authorization endpoint is for browsers navigating, not for scripts: no CORS.
            Route("/authorize", RequestBodyLimitMiddleware(request_response(authorize),
                                                           DEFAULT_MAX_REQUEST_BODY_SIZE), methods=["GET", "POST"]),
            Route("/token", _limited(request_response(token), ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
            Route("/register", _limited(request_response(register), ["POST", "OPTIONS"]),
                  methods=["POST", "OPTIONS"]),
            Route("/revoke", _limited(request_response(revoke), ["POST", "OPTIONS"]), methods=["POST", "OPTIONS"]),
        ]
