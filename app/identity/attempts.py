"""What the credential of the request being handled came to, told by whoever checked it.

The failed-authentication throttle (app.web.throttle) sits outside every route and sees only status
codes; a 200 does not mean a credential was accepted (`/healthz` answers anyone). So the code that
checks a credential says what it found, here, and the throttle reads it when the answer is out:
- `verified()`: a credential was checked and accepted (only this clears an address's failures);
- `failed()`: a credential was checked and refused, on a route whose status does not say so;
- `stale()`: a credential this server issued, now expired or revoked: not a guess, never counted.

The record lives in a context variable that the throttle sets per request; tasks started below it copy
the variable, and with it the same record, so a check made in any of them reaches the throttle.
"""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Attempt:
    verified: bool = False
    failed: bool = False
    stale: bool = False


_current: ContextVar[Attempt | None] = ContextVar("pixazo_auth_attempt", default=None)


def begin() -> Attempt:
    """A fresh record for the request about to be handled (the throttle calls this)."""
    attempt = Attempt()
    _current.set(attempt)
    return attempt


def verified() -> None:
    if (attempt := _current.get()) is not None:
        attempt.verified = True


def failed() -> None:
    if (attempt := _current.get()) is not None:
        attempt.failed = True


def stale() -> None:
    if (attempt := _current.get()) is not None:
        attempt.stale = True


def client_key(address: str) -> str:
    """The unit one client controls: an IPv4 address, or an IPv6 address's /64 (a host is routinely
    given a whole /64, so its addresses are one client). An IPv4-mapped IPv6 address is its IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
