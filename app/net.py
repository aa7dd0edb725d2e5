"""Small facts about network names and URLs, shared by the bind check, the gateway client, the
download rules, the gallery and every check of where an outbound request may go."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048  # longer is no image link we would store or show

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address, or reach one through a translator or a tunnel. Refused
# outright: where a packet to them lands depends on gateways we cannot see, and `is_global` says
# yes to most of them whatever IPv4 address they hold.
EMBEDDED_IPV4_PREFIXES = tuple(ipaddress.IPv6Network(prefix) for prefix in (
    "::/96",  # IPv4-compatible (deprecated), e.g. ::127.0.0.1
    "::ffff:0:0:0/96",  # IPv4-translated (SIIT), e.g. ::ffff:0:7f00:1
    "64:ff9b::/96",  # NAT64, well-known prefix
    "64:ff9b:1::/48",  # NAT64, local-use prefix
    "2001::/32",  # Teredo: a server and an obfuscated client IPv4 address
    "2002::/16",  # 6to4: an IPv4 address in bits 16-48
    "fec0::/10",  # site-local (deprecated), still `is_global` to Python
))
REFUSED_IPV4 = (ipaddress.IPv4Network("192.88.99.0/24"),)  # 6to4 relay anycast (deprecated), the other end


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


def is_public_address(address: str | IPAddress) -> bool:
    """Whether an IP address is a global unicast one that an outbound request may go to.

    The one address check for every outbound fetch. IPv4: `is_global`, and not multicast, reserved,
    unspecified, loopback, link-local, private or the 6to4 relay. IPv6: an IPv4-mapped address
    (::ffff:0:0/96) is judged as the IPv4 address it maps; the prefixes in EMBEDDED_IPV4_PREFIXES
    (IPv4-compatible, IPv4-translated, NAT64, Teredo, 6to4, site-local) are refused outright; the rest
    by the same rules as IPv4. A string may be in brackets; a `%zone` suffix is stripped and makes the
    address non-public (only scoped addresses carry one).

    Raises ValueError when `address` is not an IP address: callers tell names from literals so.
    """
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        text, zone, _ = text.partition("%")
        ip: IPAddress = ipaddress.ip_address(text)
        if zone:
            return False
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif any(ip in prefix for prefix in EMBEDDED_IPV4_PREFIXES):
            return False
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in REFUSED_IPV4):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)
