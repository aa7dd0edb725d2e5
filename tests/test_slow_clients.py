"""Slow and oversized requests before authentication, against the real server process: heads must
arrive in time and within a size, connections are bounded, and a non-MCP POST carries a small form
only (issue 11, point 4)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2

from app.pixazo.simulator import Simulator
from tests.test_process import server_process
from tests.test_team import ALICE, TOKENS

TIMEOUT_S = 2.0


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    started = time.monotonic()
    data = b""
    async with asyncio.timeout(limit_s):
        while chunk := await reader.read(65536):
            data += chunk
    return data, time.monotonic() - started


async def test_a_slow_head_is_answered_408_and_closed_within_the_timeout(tmp_path: Path, sim: Simulator) -> None:
    env = {"PIXAZO_HEADER_TIMEOUT_S": str(TIMEOUT_S), "PIXAZO_AUTH_TOKENS": TOKENS.get_secret_value()}
    async with server_process(tmp_path, sim, **env) as (_, url):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        writer.write(f"GET /gallery HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\n".encode())

        async def trickle() -> None:  # one header line now and then, never the end of the head
            for i in range(60):
                await asyncio.sleep(0.3)
                if writer.is_closing():
                    return
                writer.write(f"X-Slow-{i}: {i}\r\n".encode())

        dripping = asyncio.create_task(trickle())
        try:
            data, elapsed = await read_until_closed(reader, 15)
            silent, _ = await read_until_closed(silent_reader, 15)
        finally:
            dripping.cancel()
            writer.close()
            silent_writer.close()
        # The server is still there for everyone else.
        async with httpx2.AsyncClient() as http:
            health = await http.get(url + "/healthz")
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert silent.startswith(b"HTTP/1.1 408 "), silent
    assert elapsed < TIMEOUT_S + 8  # generous for a loaded machine; without the timeout it never closes
    assert health.status_code == 200


async def test_an_oversized_head_is_refused_with_431(tmp_path: Path, sim: Simulator) -> None:
    async with (server_process(tmp_path, sim, PIXAZO_MAX_HEADER_BYTES="16384") as (_, url),
                httpx2.AsyncClient(timeout=10) as http):
        big = await http.get(url + "/healthz", headers={"X-Big": "a" * 200_000})
        many = await http.get(url + "/healthz", headers={f"X-H{i}": "v" * 100 for i in range(300)})
        normal = await http.get(url + "/healthz", headers={"X-Small": "a" * 8000})
    assert big.status_code == 431
    assert many.status_code == 431
    assert normal.status_code == 200


async def test_connections_over_the_cap_get_503(tmp_path: Path, sim: Simulator) -> None:
    async with server_process(tmp_path, sim, PIXAZO_MAX_CONNECTIONS="4") as (_, url), AsyncExitStack() as stack:
        idle = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            stack.callback(writer.close)
            idle.append(reader)
        await asyncio.sleep(0.3)  # let the server accept them all
        async with httpx2.AsyncClient(timeout=10) as http:
            over = await http.get(url + "/healthz")
        for writer_reader in idle:
            writer_reader.feed_eof()
    assert over.status_code == 503


async def test_the_login_form_is_small_urlencoded_and_read_in_time(tmp_path: Path, sim: Simulator) -> None:
    env = {"PIXAZO_HEADER_TIMEOUT_S": str(TIMEOUT_S), "PIXAZO_AUTH_TOKENS": TOKENS.get_secret_value()}
    async with server_process(tmp_path, sim, **env) as (_, url):
        port = port_of(url)

        async def head_only(content_type: str, length: int) -> bytes:
            """Declare a big body, send none of it: the answer must come without it."""
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {length}\r\n\r\n".encode())
            try:
                data, _ = await read_until_closed(reader, 15)
            finally:
                writer.close()
            return data

        multipart = await head_only("multipart/form-data; boundary=x", 300_000_000)
        declared = await head_only("application/x-www-form-urlencoded", 300_000_000)
        trickled = await head_only("application/x-www-form-urlencoded", 100)  # 100 bytes that never come
        # Chunked: no length declared; 200 KB of it, far more than the cap. The server answers 413 while
        # most of it is still coming: closing then would reset the connection and lose the answer, so
        # it reads and drops the rest for a while (a lingering close) after sending it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(200):
            writer.write(b"3e8\r\n" + b"a" * 1000 + b"\r\n")
        try:
            chunked, _ = await read_until_closed(reader, 15)
        finally:
            writer.close()
        async with httpx2.AsyncClient(timeout=10) as http:
            good = await http.post(url + "/login", data={"token": ALICE, "next": "/gallery"})
            wrong = await http.post(url + "/login", data={"token": "not-a-token-at-all-xx"})
    assert multipart.startswith(b"HTTP/1.1 415 "), multipart
    assert declared.startswith(b"HTTP/1.1 413 "), declared
    assert trickled.startswith(b"HTTP/1.1 408 "), trickled
    assert chunked.startswith(b"HTTP/1.1 413 "), chunked
    assert good.status_code == 303
    assert wrong.status_code == 401
