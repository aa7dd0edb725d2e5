"""Single sign-on at the sign-in page: the team's OpenID provider vouches for who the person is.

Authorization code flow with PKCE and a nonce; the ID token is verified with PyJWT against the
provider's published keys (PyJWKClient, which blocks, so it runs in a worker thread). Who may come
in, and as which caller, is PIXAZO_OIDC_CALLERS: rules `pattern=caller`, the first match wins:
`alice@example.com=alice` (one address), `@example.com=design` (a whole domain),
`group:admins=ops` (a value of the groups claim); a caller of `*` means the e-mail address itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import jwt

from app.identity.tokens import NAME, ConfigError
from app.settings import Settings

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
TIMEOUT = aiohttp.ClientTimeout(total=10)


class SignOnError(Exception):
    """The provider's answer cannot sign anyone in; the message is for the person at the page."""


@dataclass(frozen=True)
class Rule:
    kind: str  # "email", "domain" or "group"
    value: str
    caller: str


def parse_rules(entries: list[str]) -> list[Rule]:
    rules: list[Rule] = []
    for number, entry in enumerate(entries, 1):
        pattern, sep, caller = entry.partition("=")
        pattern, caller = pattern.strip(), caller.strip()
        if not sep or not pattern or not (caller == "*" or NAME.fullmatch(caller)):
            raise ConfigError(f"PIXAZO_OIDC_CALLERS, entry {number}: expected pattern=caller (caller a name or *)")
        if pattern.startswith("group:") and len(pattern) > 6:
            rules.append(Rule("group", pattern[6:], caller))
        elif pattern.startswith("@") and "." in pattern:
            rules.append(Rule("domain", pattern[1:].lower(), caller))
        elif "@" in pattern[1:]:
            rules.append(Rule("email", pattern.lower(), caller))
        else:
            raise ConfigError(f"PIXAZO_OIDC_CALLERS, entry {number}: {pattern!r} is not an address, @domain or "
                              "group:NAME")
    return rules


def caller_for(claims: dict[str, Any], rules: list[Rule], groups_claim: str) -> str | None:
    email = claims.get("email")
    # An address the provider has not verified proves nothing about who this is.
    email = email.lower() if isinstance(email, str) and claims.get("email_verified") is not False else None
    groups = claims.get(groups_claim)
    group_set = {g for g in groups if isinstance(g, str)} if isinstance(groups, list) else set()
    for rule in rules:
        matched = ((rule.kind == "email" and email == rule.value)
                   or (rule.kind == "domain" and email is not None and email.rpartition("@")[2] == rule.value)
                   or (rule.kind == "group" and rule.value in group_set))
        if not matched:
            continue
        if rule.caller != "*":
            return rule.caller
        if email is not None and NAME.fullmatch(email):
            return email
    return None


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class OpenIDSignOn:
    def __init__(self, settings: Settings, callback_url: str) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
            raise ConfigError("single sign-on needs PIXAZO_OIDC_ISSUER, PIXAZO_OIDC_CLIENT_ID and "
                              "PIXAZO_OIDC_CLIENT_SECRET together")
        self.rules = parse_rules(settings.oidc_callers)
        if not self.rules:
            raise ConfigError("single sign-on needs PIXAZO_OIDC_CALLERS: who may sign in, as which caller")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret
        self.groups_claim = settings.oidc_groups_claim
        self.name = settings.oidc_name or urlsplit(self.issuer).hostname or self.issuer
        self.callback_url = callback_url
        self._config: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKClient | None = None

    @property
    def origin(self) -> str:
        """Where the browser goes to sign in (the page's CSP must let its form lead there)."""
        endpoint = urlsplit(str((self._config or {}).get("authorization_endpoint") or self.issuer))
        return f"{endpoint.scheme}://{endpoint.netloc}"

    async def _discover(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        if self._config is None:
            url = self.issuer + "/.well-known/openid-configuration"
            try:
                async with http.get(url, timeout=TIMEOUT) as response:
                    config = await response.json(content_type=None) if response.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                config = None
            if not isinstance(config, dict) or config.get("issuer", "").rstrip("/") != self.issuer:
                raise SignOnError(f"{self.name} is not answering; try again later or use your token")
            self._config = config
            self._jwks = jwt.PyJWKClient(str(config["jwks_uri"]), cache_keys=True, lifespan=3600)
        return self._config

    async def start(self, http: aiohttp.ClientSession) -> tuple[str, str, dict[str, str]]:
        """(the provider's URL to send the browser to, the state, what finish() needs back)."""
        config = await self._discover(http)
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": self.callback_url,
                           "scope": "openid email profile", "state": state, "nonce": nonce,
                           "code_challenge": _challenge(verifier), "code_challenge_method": "S256"})
        return f"{config['authorization_endpoint']}?{query}", state, {"nonce": nonce, "verifier": verifier}

    async def finish(self, http: aiohttp.ClientSession, code: str, saved: dict[str, str]) -> dict[str, Any]:
        """The verified ID token's claims for this sign-in."""
        config = await self._discover(http)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.callback_url,
                "code_verifier": saved["verifier"]}
        # client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
        secret = self._secret.get_secret_value() if self._secret else ""
        basic = base64.b64encode(f"{quote(self.client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()
        try:
            async with http.post(str(config["token_endpoint"]), data=form, timeout=TIMEOUT,
                                 headers={"Authorization": f"Basic {basic}"}) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise SignOnError(f"{self.name} did not answer the sign-in; try again") from None
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str):
            raise SignOnError(f"{self.name} refused the sign-in; try again")
        assert self._jwks is not None  # set by _discover  # noqa: S101 - an invariant, not a check
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, id_token)
            claims: dict[str, Any] = jwt.decode(id_token, key.key, algorithms=ALGORITHMS, audience=self.client_id,
                                                issuer=str(config["issuer"]), options={"require": ["exp", "iat"]})
        except jwt.PyJWTError as exc:
            raise SignOnError(f"the answer from {self.name} could not be verified ({type(exc).__name__})") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), saved["nonce"]):
            raise SignOnError(f"the answer from {self.name} was not for this sign-in")
        return claims
