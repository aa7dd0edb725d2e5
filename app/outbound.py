"""Outbound fetches of addresses a caller named (client metadata documents, ChatGPT's file links):
a resolver that keeps only the addresses such a fetch may connect to (app.net.is_public_address; a
loopback host only where a test names it), so a name cannot be pointed inward after a check."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from app.net import is_public_address


def address_allowed(address: str, host: str, loopback_hosts: list[str]) -> bool:
    """Whether a fetch for `host` may connect to `address`; ValueError when `address` is a name."""
    if is_public_address(address):
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_loopback and host.lower().strip("[]") in loopback_hosts


class NotPublicError(OSError):
    """A name that resolves to no address a fetch may connect to (a definite answer, unlike a timeout)."""


class PublicResolver(AbstractResolver):
    """Resolves names and keeps only the addresses an outbound fetch may connect to."""

    def __init__(self, loopback_hosts: list[str]) -> None:
        self._inner = ThreadedResolver()
        self._loopback_hosts = loopback_hosts

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if address_allowed(r["host"], host, self._loopback_hosts)]
        if not kept:
            raise NotPublicError(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def outbound_session(loopback_hosts: list[str], ca_file: Path | None, timeout_s: float,
                     **limits: Any) -> aiohttp.ClientSession:
    """A session for fetching addresses a caller named: only the addresses PublicResolver keeps, the
    system's CAs (and `ca_file`, for tests), no DNS cache, and no proxy from the environment (trust_env
    stays off: no proxy decides where these requests go). `limits`: the connector's (limit, ...)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    connector = aiohttp.TCPConnector(resolver=PublicResolver([h.lower().strip("[]") for h in loopback_hosts]),
                                     ssl=context, use_dns_cache=False, **limits)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))
