"""Callers with names: static team tokens, checked in constant time, through the SDK's TokenVerifier."""

from __future__ import annotations

import hmac
import re
from contextvars import ContextVar
from pathlib import Path

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier

from app.identity import attempts
from app.net import is_loopback
from app.settings import Settings, SettingsError, placeholder_word

SCOPE = "pixazo"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class ConfigError(SettingsError):
    """The settings cannot be served safely; the message says what to change."""


def _parse_pairs(lines: list[str], source: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        name, token = name.strip(), token.strip()
        # Never echo the token in an error: only the line number and the name.
        if not sep or not token:
            raise ConfigError(f"{source}, entry {number}: expected name:token")
        if not NAME.fullmatch(name):
            raise ConfigError(f"{source}, entry {number}: invalid caller name {name!r}")
        if name in tokens:
            raise ConfigError(f"{source}: caller {name!r} appears twice")
        if len(token) < 16:
            raise ConfigError(f"{source}: the token of {name!r} is shorter than 16 characters")
        if (word := placeholder_word(token)) is not None:
            raise ConfigError(f"{source}: the token of {name!r} looks like a placeholder (it contains {word!r}):"
                              " generate one with `openssl rand -hex 24`")
        tokens[name] = token
    return tokens


def load_tokens(settings: Settings) -> dict[str, str]:
    """caller name -> token, from PIXAZO_AUTH_TOKENS and/or PIXAZO_AUTH_TOKENS_FILE."""
    tokens: dict[str, str] = {}
    if settings.auth_tokens is not None:
        tokens |= _parse_pairs(settings.auth_tokens.get_secret_value().split(","), "PIXAZO_AUTH_TOKENS")
    if settings.auth_tokens_file is not None:
        path = Path(settings.auth_tokens_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"PIXAZO_AUTH_TOKENS_FILE: cannot read {path} ({exc.strerror})") from None
        for name, token in _parse_pairs(lines, "PIXAZO_AUTH_TOKENS_FILE").items():
            if name in tokens:
                raise ConfigError(f"caller {name!r} is defined twice")
            tokens[name] = token
    # A shared token would credit every call to whichever caller was read last.
    owners: dict[str, str] = {}
    for name, token in tokens.items():
        if token in owners:
            raise ConfigError(f"callers {owners[token]!r} and {name!r} have the same token: give each its own")
        owners[token] = name
    return tokens


def check_exposure(settings: Settings, tokens: dict[str, str]) -> str | None:
    """Raise if an open server would be reachable from other machines; else a notice for the log."""
    if tokens:
        return None
    if is_loopback(settings.host):
        return "no PIXAZO_AUTH_TOKENS set: anonymous access, bound to loopback only"
    if settings.allow_anonymous:
        return (f"no PIXAZO_AUTH_TOKENS set and PIXAZO_ALLOW_ANONYMOUS=true: anyone who reaches "
                f"{settings.host}:{settings.port} can generate images at your expense")
    raise ConfigError(
        f"refusing to serve on {settings.host} without tokens: set PIXAZO_AUTH_TOKENS or "
        "PIXAZO_AUTH_TOKENS_FILE, bind to 127.0.0.1, or set PIXAZO_ALLOW_ANONYMOUS=true")


class TeamTokenVerifier(TokenVerifier):
    """Each token names a caller. Every token is compared, so timing does not reveal which one matched."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]
        self.callers = frozenset(tokens)

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        match: str | None = None
        for name, secret in self._tokens:
            if hmac.compare_digest(presented, secret):
                match = name
        if match is None:
            return None
        attempts.verified()
        return AccessToken(token=token, client_id=match, scopes=[SCOPE], subject=match)

    async def caller_for_header(self, header: str | None) -> str | None:
        """The caller named by an `Authorization: Bearer` header, for our own routes."""
        if not header:
            return None
        found = await self.verify_token(header[7:].strip()) if header.lower().startswith("bearer ") else None
        if found is None:
            attempts.failed()  # whatever the route answers (/healthz answers 200), this was a wrong credential
            return None
        return found.client_id


# The caller when nobody authenticates: None on an open HTTP server (anonymous), "local" under stdio
# (one person on their own machine).
LOCAL_CALLER: ContextVar[str | None] = ContextVar("pixazo_local_caller", default=None)


def current_caller() -> str | None:
    """The authenticated caller of the MCP request being handled (LOCAL_CALLER when nobody authenticates)."""
    token = get_access_token()
    if token is None:
        return LOCAL_CALLER.get()
    # An OAuth token's client is the app (Claude, ChatGPT...); the caller is the person who signed in.
    return token.subject or token.client_id
