"""Shared fixtures: settings on a temp database, the Pixazo simulator, in-memory and live servers."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import Browser, async_playwright
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from app.protocol.server import build_server
from app.settings import Settings
from app.storage.database import RecordStore, open_store
from app.storage.rows import Instance
from app.web.app import create_app

if TYPE_CHECKING:
    from tests.services import SeaweedS3

TEST_KEY = "test-key-0123456789"
# A session secret as an operator generates one (`openssl rand -hex 32`): weak ones stop the start.
SESSION_SECRET = "6f1c2a9e4b7d3058e1a2c4f6b8d0e2a4c6e8f0a2b4d6f8e0c2a4b6d8f0e2a4c6"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp_path: Path, base_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": SecretStr(TEST_KEY), "base_url": base_url, "db_path": tmp_path / "pixazo.db",
        "timeout_s": 10.0, "image_dir": tmp_path / "images", "allowed_image_hosts": ["127.0.0.1", "*.r2.dev"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(latency=0.0, api_key=TEST_KEY) as simulator:
        yield simulator


@pytest.fixture
def settings(tmp_path: Path, sim: Simulator) -> Settings:
    return make_settings(tmp_path, sim.url)


@asynccontextmanager
async def in_memory_client(settings: Settings, **kwargs: Any) -> AsyncIterator[Client]:
    async with Client(build_server(settings), **kwargs) as client:
        yield client


@dataclass
class LiveServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"


@asynccontextmanager
async def live_server(settings: Settings, port: int | None = None) -> AsyncIterator[LiveServer]:
    """The real app under uvicorn on a free loopback port (or `port`), in its own thread and event loop."""
    port = port or free_port()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        await asyncio.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings, server, thread)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)


@asynccontextmanager
async def http_client(live: LiveServer, headers: dict[str, str] | None = None,
                      **kwargs: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(live.mcp_url, http_client=http), **kwargs) as client,
    ):
        yield client


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(settings) as server:
        yield server


def rows(db_path: Path, where: str = "1=1") -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM generations WHERE {where} ORDER BY id")]  # noqa: S608


@contextmanager
def small_filesystem(path: Path, size_kb: int, *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of `size_kb` KB mounted at `path` (read-only if asked), unmounted afterwards.

    Tests run as root, where chmod does not stop a write: a full or read-only filesystem is the only
    honest way to make the kernel refuse one. Without mount rights the test skips locally and fails in
    CI (CI=true), where the fixture must work.
    """
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],  # noqa: S607
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip()})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, timeout=30)  # noqa: S607
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)  # noqa: S607


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real S3-compatible server (SeaweedFS) for the whole run; tests keep apart by prefix."""
    from tests.services import start_seaweed  # tests.services imports this module

    with start_seaweed(tmp_path_factory.mktemp("seaweed")) as s3:
        yield s3


def s3_settings(tmp_path: Path, s3: SeaweedS3, prefix: str, base_url: str = "http://127.0.0.1:9",
                **overrides: Any) -> Settings:
    """make_settings with images in s3://bucket/prefix of the test server."""
    values: dict[str, Any] = {
        "image_store": f"s3://{s3.bucket}/{prefix}", "s3_endpoint_url": s3.endpoint,
        "aws_access_key_id": SecretStr(s3.access_key), "aws_secret_access_key": SecretStr(s3.secret_key),
        "aws_region": s3.region}
    return make_settings(tmp_path, base_url, **{**values, **overrides})


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session: PIXAZO_TEST_POSTGRES_URL, else a private one started here.

    Without PostgreSQL installed the tests that need it are skipped locally; in CI (CI=true) they fail.
    """
    from tests.services import PostgresServer, ServiceUnavailableError  # services imports this module

    given = os.environ.get("PIXAZO_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = PostgresServer.start()
    except ServiceUnavailableError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


def fresh_postgres_database(admin_url: str) -> tuple[str, str]:
    """A new, empty database on the server: (its URL, its name)."""
    import psycopg

    name = f"pixazo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for one test."""
    url, name = fresh_postgres_database(postgres_admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(postgres_admin_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs once per engine: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pixazo.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def store_for(url: str, instance: Instance | None = None) -> RecordStore:
    return await open_store(url, instance or Instance())


# The browser tests (gallery, OAuth sign-in) drive Debian's Chromium with Playwright. Locally, without
# it, they are skipped with that reason; in CI (.ci/run installs chromium and sets CI) they are never
# skipped: a missing browser fails the run.
CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                    reason="needs Debian's chromium: apt-get install chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield browser
        finally:
            await browser.close()


def without_xmp(data: bytes) -> bytes:
    """A kept image as Pixazo served it: the XMP packet the server puts in (app.storage.provenance), right
    after a PNG's IHDR or a JPEG's SOI (and JFIF APP0), taken out again; other bytes as they are."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        at = 33
        (length,) = struct.unpack(">I", data[at:at + 4])
        if data[at + 4:at + 8] == b"iTXt" and data[at + 8:].startswith(b"XML:com.adobe.xmp\x00"):
            return data[:at] + data[at + 12 + length:]
        return data
    if data.startswith(b"\xff\xd8"):
        at = 2 if data[2:4] != b"\xff\xe0" else 4 + struct.unpack(">H", data[4:6])[0]
        if data[at:at + 2] == b"\xff\xe1" and data[at + 4:].startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
            return data[:at] + data[at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]:]
    return data
