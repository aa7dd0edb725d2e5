"""Several server processes on one database: an instance never touches another live instance's calls in
flight; a lapsed owner's calls end INTERRUPTED, found by a live instance within the lease plus one renewal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx2

from app.pixazo.simulator import Simulator
from app.storage.database import RecordStore
from tests.conftest import SESSION_SECRET, TEST_KEY, free_port, store_for
from tests.test_process import one_call


def server_env(tmp_path: Path, sim: Simulator, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "PIXAZO_API_KEY": TEST_KEY, "PIXAZO_BASE_URL": sim.url,
        "PIXAZO_DATABASE_URL": database_url, "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
        "PIXAZO_ALLOWED_IMAGE_HOSTS": "127.0.0.1", "PIXAZO_INLINE_IMAGE": "none",
        "PIXAZO_SESSION_SECRET": SESSION_SECRET, **extra,
    }


def start(tmp_path: Path, env: dict[str, str], port: int, name: str) -> subprocess.Popen[bytes]:
    with open(tmp_path / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)


async def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx2.AsyncClient() as http:
        while True:
            with suppress(httpx2.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start: " + await asyncio.to_thread(log.read_text))
            await asyncio.sleep(0.05)


@asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str], name: str,
                  port: int | None = None) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    port = port or free_port()
    proc = start(tmp_path, env, port, name)
    try:
        await wait_healthy(proc, port, tmp_path / f"{name}.log")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        await asyncio.to_thread(proc.wait, 10)


async def status_of(store: RecordStore, gen_id: int) -> str:
    found = await store.get(gen_id)
    assert found is not None
    return found.status


async def the_pending_row(store: RecordStore) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = await store.page(status="PENDING", limit=5)
        if rows:
            return rows[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no call in flight appeared")


async def test_a_second_instance_leaves_the_first_ones_calls_in_flight_alone(
        tmp_path: Path, database_url: str) -> None:
    # Pixazo takes minutes: the call stays in flight however slowly the other processes start.
    async with Simulator(latency=300.0, api_key=TEST_KEY) as sim:
        env = server_env(tmp_path, sim, database_url)
        watcher = await store_for(database_url)
        try:
            async with serving(tmp_path, env, "first") as (_, port):
                call = asyncio.create_task(one_call(f"http://127.0.0.1:{port}", "slow and in flight", "2026-07-28"))
                gen_id = await the_pending_row(watcher)

                # Started by mistake on the same port: it opens the database, fails to bind, and exits.
                clash = start(tmp_path, env, port, "clash")
                code = await asyncio.to_thread(clash.wait, 30)
                assert code != 0
                clash_log = await asyncio.to_thread((tmp_path / "clash.log").read_text)
                assert "address already in use" in clash_log.lower()
                assert await status_of(watcher, gen_id) == "PENDING"

                # Started beside it on another port: it runs, renews its own lease, and stops cleanly.
                async with serving(tmp_path, env, "beside") as (beside, _):
                    await asyncio.sleep(0.5)
                    assert await status_of(watcher, gen_id) == "PENDING"
                    beside.send_signal(signal.SIGTERM)
                    assert await asyncio.to_thread(beside.wait, 30) == 128 + signal.SIGTERM  # an ordinary exit
                assert await status_of(watcher, gen_id) == "PENDING"

                # The first instance still owns its call: when the caller goes away, it is the one
                # that finishes the row (CANCELLED), not a neighbour (INTERRUPTED).
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
                await wait_for_status(watcher, gen_id, "CANCELLED", 30)
        finally:
            await watcher.close()


async def wait_for_status(store: RecordStore, gen_id: int, status: str, within_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await status_of(store, gen_id) == status:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"generation {gen_id} is {await status_of(store, gen_id)}, not {status}, "
                         f"after {within_s} s")


async def test_a_lapsed_lease_is_reaped_by_a_live_instance_without_a_restart(
        tmp_path: Path, database_url: str) -> None:
    lease = 2.0
    async with Simulator(latency=60.0, api_key=TEST_KEY) as sim:
        env = server_env(tmp_path, sim, database_url, PIXAZO_LEASE_S=str(lease))
        watcher = await store_for(database_url)
        calls: list[asyncio.Task[Any]] = []
        try:
            async with serving(tmp_path, env, "frozen") as (frozen, frozen_port), \
                    serving(tmp_path, env, "live") as (_, live_port):
                calls.append(asyncio.create_task(one_call(f"http://127.0.0.1:{frozen_port}", "owner freezes",
                                                          "2026-07-28")))
                gen_id = await the_pending_row(watcher)
                calls.append(asyncio.create_task(one_call(f"http://127.0.0.1:{live_port}", "owner lives",
                                                          "2026-07-28")))
                while len(await watcher.page(status="PENDING")) < 2:
                    await asyncio.sleep(0.05)
                (live_row,) = [g.id for g in await watcher.page(status="PENDING") if g.id != gen_id]

                # Frozen, its process still exists, so only the lease can tell: it lapses within `lease`,
                # and the live instance notices at its next renewal (every lease / 3).
                frozen.send_signal(signal.SIGSTOP)
                await asyncio.sleep(lease * 0.5)
                assert await status_of(watcher, gen_id) == "PENDING"  # not before the lease has lapsed
                await wait_for_status(watcher, gen_id, "INTERRUPTED", lease * 0.5 + lease / 3 + 3.0)
                assert await status_of(watcher, live_row) == "PENDING"  # the live owner's row stays
                found = await watcher.get(gen_id)
                assert found is not None
                assert found.error == "the server stopped before this call finished"
        finally:
            for task in calls:
                task.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            await watcher.close()


async def test_a_killed_instances_calls_are_reaped_at_the_next_renewal_on_the_same_machine(
        tmp_path: Path, database_url: str) -> None:
    async with Simulator(latency=60.0, api_key=TEST_KEY) as sim:
        # Reaped well before the lease could lapse: only the dead process (same machine, pid gone) explains it.
        lease = 12.0
        env = server_env(tmp_path, sim, database_url, PIXAZO_LEASE_S=str(lease))
        watcher = await store_for(database_url)
        task: asyncio.Task[Any] | None = None
        try:
            async with serving(tmp_path, env, "killed") as (killed, port), \
                    serving(tmp_path, env, "survivor") as (_, _survivor_port):
                task = asyncio.create_task(one_call(f"http://127.0.0.1:{port}", "owner is killed", "2026-07-28"))
                gen_id = await the_pending_row(watcher)
                killed.send_signal(signal.SIGKILL)
                await asyncio.to_thread(killed.wait, 10)
                assert await wait_for_status(watcher, gen_id, "INTERRUPTED", lease / 3 + 4) < lease
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await watcher.close()
