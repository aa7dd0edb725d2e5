"""Driving the authorization server as clients and people do: the SDK's OAuthClientProvider, and plain
HTTP form posts on the sign-in page (by the field names other tools use: token, decision)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

REDIRECT = "http://127.0.0.1:9/callback"  # nothing listens: the test reads the redirect instead


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


@dataclass
class Person:
    """The team member at the sign-in page, with plain HTTP (cookies kept, redirects not followed)."""

    token: str
    decision: str = "allow"
    authorize_url: str = ""
    pages: list[httpx2.Response] = field(default_factory=list)
    final: httpx2.Response | None = None

    async def redirect_handler(self, url: str) -> None:
        self.authorize_url = url

    async def open_signin(self, http: httpx2.AsyncClient, authorize_url: str) -> tuple[str, dict[str, str]]:
        found = await http.get(authorize_url)
        assert found.status_code == 302, found.text
        signin_url = urljoin(authorize_url, found.headers["location"])
        page = await http.get(signin_url)
        assert page.status_code == 200, page.text
        self.pages.append(page)
        return signin_url, hidden_fields(page.text)

    async def answer(self, http: httpx2.AsyncClient, signin_url: str, fields: dict[str, str],
                     token: str | None = None, decision: str | None = None) -> httpx2.Response:
        answer = await http.post(signin_url.split("?")[0], data={
            **fields, "token": self.token if token is None else token, "decision": decision or self.decision})
        self.pages.append(answer)
        return answer

    async def callback_handler(self) -> AuthorizationCodeResult:
        async with httpx2.AsyncClient(timeout=30) as http:
            signin_url, fields = await self.open_signin(http, self.authorize_url)
            answer = await self.answer(http, signin_url, fields)
        assert answer.status_code == 303, answer.text
        self.final = answer
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        return AuthorizationCodeResult(code=query.get("code", [""])[0], state=query.get("state", [None])[0],
                                       iss=query.get("iss", [None])[0])


def client_metadata(name: str = "Test app", auth_method: str | None = None, **extra: Any) -> OAuthClientMetadata:
    return OAuthClientMetadata(client_name=name, redirect_uris=[AnyUrl(REDIRECT)],
                               token_endpoint_auth_method=auth_method, **extra)  # type: ignore[arg-type]


def sdk_auth(mcp_url: str, person: Person, storage: MemoryStorage | None = None,
             metadata: OAuthClientMetadata | None = None, client_metadata_url: str | None = None,
             ) -> OAuthClientProvider:
    return OAuthClientProvider(mcp_url, metadata or client_metadata(), storage or MemoryStorage(),
                               person.redirect_handler, person.callback_handler,
                               client_metadata_url=client_metadata_url)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass
class Grant:
    """One client's way through the flow by hand, for the cases the SDK client would never try."""

    base: str
    client_id: str = ""
    client_secret: str | None = None
    verifier: str = ""
    state: str = ""

    async def register(self, http: httpx2.AsyncClient, **extra: Any) -> httpx2.Response:
        body = {"client_name": "Manual", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **extra}
        answer = await http.post(self.base + "/register", json=body)
        if answer.status_code == 201:
            self.client_id = answer.json()["client_id"]
            self.client_secret = answer.json().get("client_secret")
        return answer

    def authorize_url(self, **overrides: str) -> str:
        self.verifier, challenge = pkce()
        self.state = secrets.token_urlsafe(8)
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT,
                  "state": self.state, "code_challenge": challenge, "code_challenge_method": "S256",
                  "resource": self.base + "/mcp", **overrides}
        return f"{self.base}/authorize?{urlencode(params)}"

    async def code(self, http: httpx2.AsyncClient, token: str, **overrides: str) -> str:
        person = Person(token)
        signin_url, fields = await person.open_signin(http, self.authorize_url(**overrides))
        answer = await person.answer(http, signin_url, fields)
        assert answer.status_code == 303, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query["state"] == [self.state]
        return query["code"][0]

    async def exchange(self, http: httpx2.AsyncClient, code: str, verifier: str | None = None,
                       **extra: str) -> httpx2.Response:
        return await http.post(self.base + "/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": self.client_id,
            "code_verifier": verifier or self.verifier, "resource": self.base + "/mcp", **extra})

    async def refresh(self, http: httpx2.AsyncClient, refresh_token: str) -> httpx2.Response:
        return await http.post(self.base + "/token", data={
            "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id,
            "resource": self.base + "/mcp"})


async def mcp_status(http: httpx2.AsyncClient, base: str, access_token: str) -> int:
    """The HTTP status /mcp gives an initialize request carrying this token."""
    answer = await http.post(base + "/mcp", headers={
        "Authorization": f"Bearer {access_token}", "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    return answer.status_code


def oauth_rows(db_path: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]  # noqa: S608 - test's own table names


def db_bytes(db_path: Path) -> bytes:
    """The database's bytes on disk, its write-ahead log included."""
    wal = Path(str(db_path) + "-wal")
    return db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
