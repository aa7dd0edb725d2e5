"""Small facts about network names and URLs, shared by the bind check, the gateway client, the
download rules and the gallery."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048  # longer is no image link we would store or show


def is_http_url(value: object) -> bool:
    """Whether a value is an absolute http(s) URL with a host and nothing a link could abuse:
    never javascript:, data: or another scheme, no whitespace or control characters, not huge."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 in brackets or not) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
