"""The sign-in and consent page of the authorization step: one form, a team token or single sign-on.

Other tools drive it by its names: a POST form with a password input `token` and submit buttons
`decision` = `allow` | `deny`. CSRF: a random value in an HttpOnly SameSite=Strict cookie must come
back in the form (double submit). It cannot be framed (CSP frame-ancestors 'none', X-Frame-Options).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from app.identity import attempts
from app.identity.names import shown_name
from app.identity.oauth import SIGNIN_PATH, PixazoOAuthProvider
from app.identity.sso import OpenIDSignOn, SignOnError, caller_for
from app.identity.tokens import TeamTokenVerifier
from app.storage.oauth_records import PendingRequest

logger = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "pixazo_oauth_csrf"
SSO_COOKIE = "pixazo_oauth_sso"
SSO_PATH = "/oauth/sso"
SSO_CALLBACK_PATH = "/oauth/sso/callback"
MAX_TOKEN_FAILURES = 3  # wrong team tokens one pending sign-in takes before it ends


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value if isinstance(value, str) else ""


class SignInPage:
    def __init__(self, provider: PixazoOAuthProvider, team: TeamTokenVerifier | None, sso: OpenIDSignOn | None,
                 http: Callable[[], aiohttp.ClientSession]) -> None:
        self.provider = provider
        self.team = team
        self.sso = sso
        self._http = http
        self.secure = provider.issuer.startswith("https://")

    def _headers(self, pending: PendingRequest | None) -> dict[str, str]:
        # form-action covers where the form's answer redirects: the client, and the provider for SSO.
        targets = ["'self'"]
        if pending is not None:
            targets.append(_origin(pending.params["redirect_uri"]))
        if self.sso is not None:
            targets.append(self.sso.origin)
        return {
            "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                        f"form-action {' '.join(targets)}; frame-ancestors 'none'; base-uri 'none'"),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",  # not no-referrer: that makes form posts say "Origin: null"
            "Cache-Control": "no-store",
        }

    def _page(self, request: Request, pending: PendingRequest | None, request_id: str, csrf: str,
              error: str | None = None, status: int = 200) -> Response:
        context = {
            "pending": pending, "request_id": request_id, "csrf": csrf, "error": error,
            # The name is the client's own claim (shown as such), cleaned of bidi and control characters;
            # the host name alone says where the browser goes (no userinfo a person could misread).
            "client_name": (shown_name(pending.params.get("client_name") or "") or shown_name(pending.client_id)
                            ) if pending else None,
            "redirect_host": urlsplit(pending.params["redirect_uri"]).hostname if pending else None,
            "sso_name": self.sso.name if self.sso is not None else None, "tokens": self.team is not None,
        }
        response = TEMPLATES.TemplateResponse(request, "signin.html", context, status_code=status,
                                              headers=self._headers(pending))
        response.set_cookie(CSRF_COOKIE, csrf, max_age=3600, path="/oauth", secure=self.secure, httponly=True,
                            samesite="strict")
        return response

    def _csrf(self, request: Request) -> str:
        current = request.cookies.get(CSRF_COOKIE, "")
        return current if len(current) >= 32 else secrets.token_urlsafe(32)

    def _csrf_ok(self, request: Request, form_value: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return len(cookie) >= 32 and hmac.compare_digest(cookie.encode(), form_value.encode())

    def _expired(self, request: Request) -> Response:
        return self._page(request, None, "", self._csrf(request),
                          "This sign-in link has expired or was already used. Start again from your app.", 400)

    async def show(self, request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        pending = await self.provider.records.request(request_id) if request_id else None
        if pending is None:
            return self._expired(request)
        return self._page(request, pending, request_id, self._csrf(request))

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        request_id, decision = _field(form, "request"), _field(form, "decision")
        if not self._csrf_ok(request, _field(form, "csrf")):
            return self._page(request, None, "", self._csrf(request),
                              "This form has expired (or was sent from another site). Start again from your app.", 403)
        pending = await self.provider.records.request(request_id) if request_id else None
        if pending is None:
            return self._expired(request)
        if decision == "deny":
            taken = await self.provider.records.take_request(request_id)
            if taken is None:
                return self._expired(request)
            await self.provider.records.touch_client(taken.client_id, "was denied")
            return RedirectResponse(self.provider.refusal(taken, "access_denied", "the user denied access"), 303)
        if decision != "allow":
            return self._page(request, pending, request_id, self._csrf(request), "Choose Allow or Deny.", 400)
        token = _field(form, "token").strip()
        found = await self.team.verify_token(token) if self.team is not None and token else None
        if found is None or not found.subject:
            # Counted here for this request (it ends after a few), and by the throttle for the address.
            failures = await self.provider.records.request_failed(request_id, MAX_TOKEN_FAILURES)
            if failures >= MAX_TOKEN_FAILURES or failures == 0:
                logger.warning("oauth: sign-in request of client %s ended after %d wrong tokens",
                               pending.client_id, MAX_TOKEN_FAILURES)
                return self._page(request, None, "", self._csrf(request),
                                  "Too many wrong tokens: this sign-in has ended. Start again from your app.", 401)
            return self._page(request, pending, request_id, self._csrf(request), "That token is not valid.", 401)
        taken = await self.provider.records.take_request(request_id)
        if taken is None:
            return self._expired(request)
        return RedirectResponse(await self.provider.approve(taken, found.subject), 303)

    async def sso_start(self, request: Request) -> Response:
        form = await request.form()
        request_id = _field(form, "request")
        if self.sso is None or not self._csrf_ok(request, _field(form, "csrf")):
            return self._page(request, None, "", self._csrf(request),
                              "This form has expired (or was sent from another site). Start again from your app.", 403)
        pending = await self.provider.records.request(request_id) if request_id else None
        if pending is None:
            return self._expired(request)
        try:
            url, state, saved = await self.sso.start(self._http())
        except SignOnError as exc:
            return self._page(request, pending, request_id, self._csrf(request), str(exc), 502)
        if not await self.provider.records.start_sso(request_id, state, saved):
            return self._expired(request)
        response = RedirectResponse(url, 303)
        # Lax, not Strict: the provider's redirect back is a cross-site navigation. It binds the answer to
        # the browser that asked, so a sign-in started elsewhere cannot be completed here.
        response.set_cookie(SSO_COOKIE, state, max_age=900, path=SSO_PATH, secure=self.secure, httponly=True,
                            samesite="lax")
        return response

    async def sso_callback(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        cookie = request.cookies.get(SSO_COOKIE, "")
        if self.sso is None or not state or not hmac.compare_digest(cookie.encode(), state.encode()):
            attempts.failed()  # a forged or replayed answer: counted like a wrong token
            return self._expired(request)
        pending = await self.provider.records.take_sso(state)
        if pending is None:
            attempts.failed()
            return self._expired(request)
        code = request.query_params.get("code")
        if not code:
            return RedirectResponse(self.provider.refusal(pending, "access_denied",
                                                          f"{self.sso.name} did not sign you in"), 303)
        try:
            claims = await self.sso.finish(self._http(), code, pending.sso or {})
        except SignOnError as exc:
            attempts.failed()
            logger.warning("oauth: single sign-on failed: %s", exc)
            return RedirectResponse(self.provider.refusal(pending, "access_denied", str(exc)), 303)
        caller = caller_for(claims, self.sso.rules, self.sso.groups_claim)
        if caller is None:
            logger.warning("oauth: %s signed in through %s but no PIXAZO_OIDC_CALLERS rule admits them",
                           claims.get("email") or claims.get("sub"), self.sso.name)
            return RedirectResponse(self.provider.refusal(
                pending, "access_denied", "your account is not allowed to use this server"), 303)
        attempts.verified()
        response = RedirectResponse(await self.provider.approve(pending, caller), 303)
        response.delete_cookie(SSO_COOKIE, path=SSO_PATH)
        return response

    def routes(self) -> list[Route]:
        routes = [
            Route(SIGNIN_PATH, self.show, methods=["GET"]),
            Route(SIGNIN_PATH, self.answer, methods=["POST"]),
        ]
        if self.sso is not None:
            routes += [Route(SSO_PATH, self.sso_start, methods=["POST"]),
                       Route(SSO_CALLBACK_PATH, self.sso_callback, methods=["GET"])]
        return routes
