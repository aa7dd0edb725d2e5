"""Which redirect URIs a client may register: https anywhere, plain http only to this machine, no userinfo."""

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
    if parts.username is not None or parts.password is not None:
        # https://claude.ai@evil.example/cb goes to evil.example, whatever a person reads first.
        return False
    if parts.scheme == "https":
        return True
    # RFC 8252 §7.3: native apps listen on a loopback port; nothing else gets plain http.
    return parts.scheme == "http" and is_loopback(host)
