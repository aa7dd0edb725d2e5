"""The server as a real process: SIGTERM drains calls in flight; SIGKILL under load loses nothing seen."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.pixazo.simulator import Simulator
from tests.conftest import TEST_KEY, free_port, rows


@asynccontextmanager
async def server_process(tmp_path: Path, sim: Simulator, port: int | None = None,
                         **env: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    port = port or free_port()
    environ = {
        **os.environ, "PIXAZO_API_KEY": TEST_KEY, "PIXAZO_BASE_URL": sim.url,
        "PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
        "PIXAZO_ALLOWED_IMAGE_HOSTS": "127.0.0.1", "PIXAZO_INLINE_IMAGE": "none", **env,
    }
    log = open(tmp_path / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=environ,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        async with httpx2.AsyncClient() as http:
            while True:
                with suppress(httpx2.HTTPError):
                    if (await http.get(url + "/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start: " + (tmp_path / f"server-{port}.log").read_text())
                await asyncio.sleep(0.05)
        yield proc, url
    finally:
        # SIGTERM, an ordinary exit (so coverage keeps what the child ran); SIGKILL only if it hangs.
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        log.close()


async def one_call(url: str, prompt: str, mode: str) -> Any:
    """A remote agent: connects, lists tools (as agents do), calls once. Returns the result or the error."""
    results: list[Any] = []
    try:
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60)) as http,
            Client(streamable_http_client(url + "/mcp", http_client=http, terminate_on_close=False),
                   mode=mode) as client,
        ):
            await client.list_tools()
            results.append(await client.call_tool("pix_generate", {"prompt": prompt}))
    except BaseException as exc:  # noqa: BLE001 - the server going away may break the client's exit
        if not results:
            return exc
    return results[0]


async def test_sigterm_lets_calls_in_flight_finish_and_delivers_every_answer(tmp_path: Path) -> None:
    async with Simulator(latency=2.0) as sim, server_process(tmp_path, sim) as (proc, url):
        modes = ["2026-07-28", "legacy"] * 4
        calls = [asyncio.create_task(one_call(url, f"drain {i}", mode)) for i, mode in enumerate(modes)]
        while sim.stats.in_flight < len(calls):
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with httpx2.AsyncClient() as http:
            try:
                refused = (await http.get(url + "/healthz")).status_code >= 500
            except httpx2.ConnectError:
                refused = True
        assert refused  # no longer accepting (or answering healthz with 503 while it drains)
        results = await asyncio.gather(*calls)
        code = await asyncio.to_thread(proc.wait, 30)
    failures = [r for r in results if isinstance(r, BaseException) or r.is_error]
    assert failures == []
    assert {r.structured_content["status"] for r in results} == {"SUCCESS"}
    assert code == 128 + signal.SIGTERM  # an ordinary exit (atexit ran), not death by the signal
    assert sorted(r["status"] for r in rows(tmp_path / "pixazo.db")) == ["SUCCESS"] * len(modes)


async def test_sigkill_under_load_then_restart_keeps_the_database_whole(tmp_path: Path) -> None:
    seen_success: list[int] = []
    async with Simulator(latency=0.3) as sim:
        async with server_process(tmp_path, sim) as (proc, url):
            async def agent(n: int) -> None:
                for i in range(50):
                    result = await one_call(url, f"load {n}-{i}", "2026-07-28")
                    if isinstance(result, BaseException):
                        return
                    if not result.is_error and result.structured_content["status"] == "SUCCESS":
                        seen_success.append(result.structured_content["id"])

            agents = [asyncio.create_task(agent(n)) for n in range(12)]
            while len(seen_success) < 30:
                await asyncio.sleep(0.05)
            while sim.stats.in_flight == 0:
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*agents)
        db = tmp_path / "pixazo.db"
        with sqlite3.connect(db) as conn:
            pending = conn.execute("SELECT COUNT(*) FROM generations WHERE status = 'PENDING'").fetchone()[0]
        conn.close()
        assert pending > 0  # the kill really caught calls in flight
        async with server_process(tmp_path, sim):
            pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        statuses = dict(conn.execute("SELECT id, status FROM generations").fetchall())
    conn.close()
    assert "PENDING" not in statuses.values()
    assert list(statuses.values()).count("INTERRUPTED") == pending
    assert all(statuses[i] == "SUCCESS" for i in seen_success)
