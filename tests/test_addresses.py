"""The one address check for outbound fetches (security issue 19, point 9): IPv4 hidden in IPv6 is
judged as that IPv4 address or refused, and the client metadata fetcher refuses such a literal before
it connects anywhere."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest

from app.identity.cimd import MetadataDocumentError, MetadataDocuments
from app.net import is_public_address

REFUSED = [
    # IPv4 that is not global unicast
    "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not a bind
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1",
    "192.88.99.1",  # the 6to4 relay anycast
    # IPv6 that is not global unicast
    "::", "::1", "fe80::1", "fe80::1%eth0", "[fe80::1%25eth0]", "fc00::1", "fd12:3456::1", "fec0::1",
    "ff02::1", "ff0e::1", "2001:db8::1", "100::1",
    # IPv4-mapped (::ffff:0:0/96), judged as the IPv4 address it maps
    "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "[::ffff:127.0.0.1]",
    # IPv4-translated (::ffff:0:0:0/96), the odd spelling Python does not see as mapped
    "::ffff:0:7f00:1", "::ffff:0:1.1.1.1",
    # IPv4-compatible (::/96)
    "::127.0.0.1", "::a9fe:a9fe", "::1.1.1.1",
    # NAT64, well-known and local-use prefixes
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::1.1.1.1", "64:ff9b:1::a9fe:a9fe",
    # 6to4 (the IPv4 address in bits 16-48)
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:101:101::1",
    # Teredo: server 65.54.227.120, client 127.0.0.1 (obfuscated as 80ff:fffe); and server 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:0:7f00:1::1",
]

PUBLIC = ["1.1.1.1", "8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "[2606:4700:4700::1111]",
          "2a00:1450:4001:81c::200e", "::ffff:1.1.1.1"]


@pytest.mark.parametrize("address", REFUSED)
def test_an_address_that_is_not_global_unicast_is_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_passes(address: str) -> None:
    assert is_public_address(address) is True


def test_address_objects_are_judged_like_their_text() -> None:
    assert is_public_address(ipaddress.ip_address("2606:4700:4700::1111")) is True
    assert is_public_address(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) is False
    assert is_public_address(ipaddress.IPv6Address("fe80::1%eth0")) is False


@pytest.mark.parametrize("name", ["localhost", "example.com", "127.1", "0x7f000001", "", "[example.com]"])
def test_a_name_is_not_an_address(name: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        is_public_address(name)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP listener on 127.0.0.1 counting connections, where an unwrapped literal would land."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[::127.0.0.1]", "[::ffff:0:7f00:1]", "[64:ff9b::7f00:1]",
                                  "[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"])
async def test_a_metadata_document_at_an_embedded_ipv4_literal_is_refused_before_connecting(
        listener: tuple[int, list[int]], host: str) -> None:
    port, connections = listener
    url = f"https://{host}:{port}/client.json"
    # Even with loopback metadata allowed for the name it would be asked for.
    async with MetadataDocuments([host, "localhost"], None, "pixazo") as documents:
        with pytest.raises(MetadataDocumentError, match="is not a public address"):
            await documents._fetch(url)
        assert await documents.client(url) is None
    assert connections == []
