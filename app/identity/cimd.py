"""Client ID Metadata Documents: an https URL used as a client_id, fetched under the download rules.

Public addresses only (the resolver drops private, loopback and link-local answers, so a name cannot
be pointed inward after the check), no redirects, a size cap while streaming, a time cap, and a
short cache. Loopback is reachable only for hosts named in PIXAZO_OAUTH_METADATA_LOOPBACK_HOSTS,
which exists for tests, like the image downloader's explicit loopback rule.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict, deque
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from app.identity.names import name_problem
from app.identity.redirects import redirect_uri_allowed
from app.outbound import NotPublicError, address_allowed, outbound_session

logger = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024
TIMEOUT_S = 5.0
CACHE_S = 300.0
FAILURE_CACHE_S = 10.0  # a document that answered but cannot be used (a timeout is never cached)
CACHE_ENTRIES = 1000
PER_HOST = 4  # fetches in flight to one host: slow documents on one host cannot take every connection
TOTAL = 64  # fetches in flight in all
PER_REQUESTER_PER_MINUTE = 20  # fetches one client address may set off (/authorize and /token name documents)


class MetadataDocumentError(Exception):
    """The document could not be fetched or is not a usable client description."""


class MetadataDocumentUnavailable(MetadataDocumentError):
    """The document cannot be fetched now (busy, timed out, unreachable): says nothing about the client,
    so it is never cached as "not found"; the caller answers "try again" instead."""


# The address of the client whose request names a document (set by the OAuth routes): its fetches are counted.
requester: ContextVar[str] = ContextVar("pixazo_cimd_requester", default="unknown")


def is_metadata_url(client_id: str) -> bool:
    """Whether a client_id is a metadata document URL (https, a path, nothing else)."""
    parts = urlsplit(client_id)
    return (parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")
            and not parts.fragment and parts.username is None and parts.password is None)


class MetadataDocuments:
    """Fetches and caches client metadata documents. Open it (async with) in the lifespan."""

    def __init__(self, loopback_hosts: list[str], ca_file: Path | None, scope: str) -> None:
        self._loopback_hosts = [h.lower().strip("[]") for h in loopback_hosts]
        self._ca_file = ca_file
        self._scope = scope
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, tuple[float, OAuthClientInformationFull | None]] = {}
        self._inflight: dict[str, asyncio.Future[OAuthClientInformationFull | None]] = {}
        self._per_host: defaultdict[str, int] = defaultdict(int)
        self._started: dict[str, deque[float]] = {}

    async def __aenter__(self) -> MetadataDocuments:
        self._session = outbound_session(self._loopback_hosts, self._ca_file, TIMEOUT_S, limit=TOTAL,
                                         limit_per_host=PER_HOST)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def client(self, url: str) -> OAuthClientInformationFull | None:
        """The client a metadata document describes, or None when it cannot be used (logged).

        Raises MetadataDocumentUnavailable when it cannot be fetched now: too many fetches in flight to
        its host or in all, too many set off by this requester, a timeout or a broken connection.
        """
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        if (shared := self._inflight.get(url)) is not None:
            return await asyncio.shield(shared)  # many sign-ins through one new client: one fetch
        host = (urlsplit(url).hostname or "").lower()
        if self._per_host[host] >= PER_HOST or len(self._inflight) >= TOTAL:
            logger.warning("client metadata document %s not fetched: too many fetches in flight", url)
            raise MetadataDocumentUnavailable("too many client metadata documents are being fetched")
        self._admit(requester.get(), now)
        future: asyncio.Future[OAuthClientInformationFull | None] = asyncio.get_running_loop().create_future()
        self._inflight[url] = future
        self._per_host[host] += 1
        try:
            try:
                found: OAuthClientInformationFull | None = self._parse(url, await self._fetch(url))
                ttl = CACHE_S
            except MetadataDocumentUnavailable as exc:
                logger.warning("client metadata document %s unavailable: %s", url, exc)
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody else has to
                raise
            except MetadataDocumentError as exc:
                logger.warning("client metadata document %s refused: %s", url, exc)
                found, ttl = None, FAILURE_CACHE_S
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[url] = (time.monotonic() + ttl, found)
            future.set_result(found)
            return found
        finally:
            del self._inflight[url]
            self._per_host[host] -= 1
            if not self._per_host[host]:
                del self._per_host[host]

    def _admit(self, address: str, now: float) -> None:
        """Count a fetch against the requester's minute; raise MetadataDocumentUnavailable over it."""
        if len(self._started) > 10_000:
            self._started.clear()
        window = self._started.setdefault(address, deque())
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= PER_REQUESTER_PER_MINUTE:
            logger.warning("client metadata documents: %s asked for too many new ones", address)
            raise MetadataDocumentUnavailable("too many new client metadata documents from this address")
        window.append(now)

    async def _fetch(self, url: str) -> bytes:
        if self._session is None:
            raise MetadataDocumentError("the server is not running")
        host = urlsplit(url).hostname or ""
        try:
            # An address literal skips the resolver: check it here.
            if not address_allowed(host, host, self._loopback_hosts):
                raise MetadataDocumentError(f"{host} is not a public address")
        except ValueError:
            pass  # a name: the resolver checks what it resolves to
        try:
            async with self._session.get(url, allow_redirects=False,
                                         headers={"Accept": "application/json"}) as response:
                if response.status in (408, 429) or response.status >= 500:
                    raise MetadataDocumentUnavailable(f"answered HTTP {response.status}")
                if response.status != 200:
                    raise MetadataDocumentError(f"answered HTTP {response.status}")
                if response.content_length is not None and response.content_length > MAX_BYTES:
                    raise MetadataDocumentError(f"larger than {MAX_BYTES} bytes")
                data = b""
                async for chunk in response.content.iter_chunked(4096):
                    data += chunk
                    if len(data) > MAX_BYTES:
                        raise MetadataDocumentError(f"larger than {MAX_BYTES} bytes")
                return data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"fetch failed ({type(exc).__name__}: {exc})"
            # A certificate we do not trust, or a name that points inward, will not change in a minute.
            if isinstance(exc, aiohttp.ClientSSLError) or (
                    isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, NotPublicError)):
                raise MetadataDocumentError(reason) from None
            raise MetadataDocumentUnavailable(reason) from None

    def _parse(self, url: str, data: bytes) -> OAuthClientInformationFull:
        try:
            doc = json.loads(data)
        except ValueError:
            raise MetadataDocumentError("not JSON") from None
        if not isinstance(doc, dict):
            raise MetadataDocumentError("not a JSON object")
        if doc.get("client_id") != url:
            raise MetadataDocumentError("its client_id is not its own URL")
        uris = doc.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            raise MetadataDocumentError("no redirect_uris")
        bad = [u for u in uris if not redirect_uri_allowed(u)]
        if bad:
            raise MetadataDocumentError(f"redirect URI {bad[0]!r} is neither https nor loopback")
        method = doc.get("token_endpoint_auth_method", "none")
        if method != "none":
            # A document is public: there is no secret it could share with us.
            raise MetadataDocumentError(f"token_endpoint_auth_method {method!r} (only 'none')")
        fields: dict[str, Any] = {
            "client_id": url, "redirect_uris": uris, "token_endpoint_auth_method": "none", "scope": self._scope,
            "grant_types": [g for g in doc.get("grant_types", ["authorization_code", "refresh_token"])
                            if g in ("authorization_code", "refresh_token")],
            "response_types": ["code"],
        }
        for key in ("client_name", "client_uri", "logo_uri"):
            if isinstance(doc.get(key), str):
                fields[key] = doc[key]
        problem = name_problem(fields.get("client_name"))
        if problem is not None:
            raise MetadataDocumentError(problem)
        try:
            return OAuthClientInformationFull.model_validate(fields)
        except ValidationError as exc:
            raise MetadataDocumentError(f"invalid metadata ({exc.error_count()} error(s))") from None
