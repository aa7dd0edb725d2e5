"""Three replicas on one PostgreSQL and one S3-compatible store (SeaweedFS), behind nginx round-robin:
both protocol eras work through the balancer, one caller's per-minute limit holds exactly across the
replicas, every image reads back through any replica, and a replica SIGKILLed under load leaves its
calls INTERRUPTED by the survivors within the lease, none PENDING, every other call SUCCESS."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.pixazo.simulator import Simulator
from tests.conftest import TEST_KEY
from tests.services import SeaweedS3, start_nginx
from tests.test_instances import server_env, serving

pytestmark = pytest.mark.timeout(300)

LEASE_S = 3.0
PER_MINUTE = 6
CALLERS = ["eras", "limited", "k0", "k1", "k2", "k3", "k4"]
TOKENS = {name: f"token-{name}-{'x' * 24}" for name in CALLERS}


async def call(url: str, caller: str, prompt: str, mode: str = "2026-07-28") -> Any:
    """A remote agent through the balancer: connects, lists tools, calls once. The result, or the error
    when the replica serving it dies."""
    headers = {"Authorization": f"Bearer {TOKENS[caller]}"}
    try:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
            Client(streamable_http_client(url + "/mcp", http_client=http, terminate_on_close=False),
                   mode=mode) as client,
        ):
            await client.list_tools()
            return await client.call_tool("pix_generate", {"prompt": prompt})
    except BaseException as exc:  # noqa: BLE001 - a killed replica breaks the stream in many ways
        return exc


def succeeded(result: Any) -> bool:
    return not isinstance(result, BaseException) and not result.is_error \
        and result.structured_content["status"] == "SUCCESS"


def db_rows(url: str, where: str = "TRUE", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT id, prompt, status, caller, owner, image_path, image_sha256 FROM generations"  # noqa: S608
                    f" WHERE {where} ORDER BY id".encode(), args)
        return list(cur.fetchall())


def instance_of(url: str, pid: int) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM instances WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"no lease row for pid {pid}"
    return str(row[0])


@asynccontextmanager
async def replicas(tmp_path: Path, env: dict[str, str], count: int) -> AsyncIterator[list[tuple[Any, int]]]:
    async with AsyncExitStack() as stack:
        # One after another: each start is cheap, and the 2-core machine is shared.
        yield [await stack.enter_async_context(serving(tmp_path, env, f"replica-{i}")) for i in range(count)]


async def test_three_replicas_behind_a_round_robin_balancer_share_calls_limits_images_and_recover_a_killed_one(
        tmp_path: Path, postgres_url: str, seaweed: SeaweedS3) -> None:
    prefix = f"replicas-{uuid.uuid4().hex[:12]}"
    async with Simulator(latency=0.2, api_key=TEST_KEY) as sim:
        env = server_env(tmp_path, sim, postgres_url, **seaweed.env(prefix),
                         PIXAZO_LEASE_S=str(LEASE_S), PIXAZO_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE),
                         PIXAZO_AUTH_TOKENS=",".join(f"{n}:{t}" for n, t in TOKENS.items()))
        async with replicas(tmp_path, env, 3) as servers:
            upstream = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=30s;"
                                  for _, port in servers)
            http = f"""    upstream pixazo {{\n{upstream}\n    }}
    log_format upstream '$upstream_addr $request_method $status';"""
            server = """        access_log upstream.log upstream;
        location / {
            proxy_pass http://pixazo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }"""
            with start_nginx(tmp_path, server, http) as port:
                url = f"http://127.0.0.1:{port}"

                # Both eras through the balancer (the legacy leg is stateless on PostgreSQL, so a
                # session's requests may land on different replicas).
                eras = await asyncio.gather(*[call(url, "eras", f"era {i} {mode}", mode)
                                              for i, mode in enumerate(["2026-07-28", "legacy"] * 3)])
                assert all(succeeded(r) for r in eras), eras

                # One caller's limit is exact across the replicas: of 10 calls at once, PER_MINUTE pass.
                limited = await asyncio.gather(*[call(url, "limited", f"limited {i}") for i in range(10)])
                assert sum(succeeded(r) for r in limited) == PER_MINUTE, limited
                refused = [r for r in limited if not succeeded(r)]
                assert all(not isinstance(r, BaseException) and r.is_error for r in refused), refused
                assert all("limit" in r.content[0].text.lower() for r in refused)

                log = (tmp_path / "nginx" / "upstream.log").read_text()
                assert all(f"127.0.0.1:{p}" in log for _, p in servers), log  # every replica served

                # Every image reads back, byte for byte, through each replica directly.
                kept = await asyncio.to_thread(db_rows, postgres_url, "status = 'SUCCESS'")
                assert len(kept) == 6 + PER_MINUTE
                async with httpx2.AsyncClient(timeout=30) as client:
                    for row in kept:
                        for _, replica_port in servers:
                            got = await client.get(f"http://127.0.0.1:{replica_port}/images/{row['id']}",
                                                   headers={"Authorization": f"Bearer {TOKENS[row['caller']]}"})
                            assert got.status_code == 200, (row, got.status_code)
                            assert hashlib.sha256(got.content).hexdigest() == row["image_sha256"]
                assert len(seaweed.keys(prefix + "/")) == len(kept)  # in the bucket, not on a disk

                # Under load, one replica dies: its calls end INTERRUPTED by the survivors within the
                # lease (plus one renewal), without a restart; every other call succeeds.
                sim.latency = 3.0
                victim, _ = servers[1]
                victim_id = await asyncio.to_thread(instance_of, postgres_url, victim.pid)
                load = [asyncio.create_task(call(url, f"k{i % 5}", f"load {i}")) for i in range(15)]
                deadline = time.monotonic() + 60
                while sim.stats.in_flight < len(load):
                    assert time.monotonic() < deadline, f"only {sim.stats.in_flight} calls reached Pixazo"
                    await asyncio.sleep(0.02)
                pending = await asyncio.to_thread(db_rows, postgres_url, "status = 'PENDING'")
                assert len(pending) == len(load)
                assert any(r["owner"] == victim_id for r in pending)  # round-robin gave it some
                victim.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await asyncio.to_thread(victim.wait, 10)
                results = await asyncio.gather(*load)

                while await asyncio.to_thread(db_rows, postgres_url, "status = 'PENDING'"):
                    assert time.monotonic() - killed_at < 3 * LEASE_S + 5, "rows left PENDING"
                    await asyncio.sleep(0.1)
                reaped_after = time.monotonic() - killed_at
                rows = await asyncio.to_thread(db_rows, postgres_url, "prompt LIKE 'load %%'")
                assert len(rows) == len(load)
                theirs = [r for r in rows if r["owner"] == victim_id]
                others = [r for r in rows if r["owner"] != victim_id]
                assert theirs
                assert {r["status"] for r in theirs} == {"INTERRUPTED"}
                assert {r["status"] for r in others} == {"SUCCESS"}, others
                # Each caller saw what its row says: a result for every surviving call, none for the victim's.
                assert sum(succeeded(r) for r in results) == len(others)
                assert reaped_after < LEASE_S + LEASE_S / 3 + 3  # the lease, one renewal, and some slack
