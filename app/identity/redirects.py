"""Which redirect URIs a client may register: https anywhere, plain http only to this machine."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.net import is_loopback


def redirect_uri_allowed(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    # RFC 8252 §7.3: native apps listen on a loopback port; nothing else gets plain http.
    return parts.scheme == "http" and is_loopback(host)
