"""Canary run: the key and every token set to unique strings, every fault path exercised, then every
place a secret could leak searched for them. Also checks the canonical per-call JSON log line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from app.pixazo.simulator import Fault, Simulator
from tests.conftest import free_port

KEY = "canary-pixazo-key-7Qz9XvL2"
ALICE = "canary-token-alice-Hn4Kp8Ws"
BOB = "canary-token-bob-Jd6Rt1Yc"
WRONG = "canary-token-wrong-Bm3Fq5Ze"
CANARIES = (KEY, ALICE, BOB, WRONG)


async def test_no_secret_leaks_anywhere_under_every_fault(tmp_path: Path) -> None:
    evidence: list[str] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with Simulator(api_key=KEY) as sim:
        env = {
            **os.environ, "PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": sim.url,
            "PIXAZO_AUTH_TOKENS": f"alice:{ALICE},bob:{BOB}", "PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"),
            "PIXAZO_IMAGE_DIR": str(tmp_path / "images"), "PIXAZO_ALLOWED_IMAGE_HOSTS": "127.0.0.1",
            "PIXAZO_TIMEOUT_S": "1", "PIXAZO_RETRY_BASE_S": "0.01", "PIXAZO_MAX_RETRIES": "1",
            "PIXAZO_RATE_LIMIT_PER_MINUTE": "40", "PIXAZO_MAX_IMAGE_BYTES": "5000000", "PIXAZO_LOG_PROMPT_CHARS": "20",
            "PIXAZO_BREAKER_THRESHOLD": "100",
            # The wrong token below is tried on five routes (/healthz counts too): not enough to be blocked.
            "PIXAZO_AUTH_FAILURE_LIMIT": "20",
        }
        stdout, stderr = open(tmp_path / "stdout.log", "wb"), open(tmp_path / "stderr.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                stdout=stdout, stderr=stderr, cwd=tmp_path)
        try:
            async with httpx2.AsyncClient() as http:
                # Bounded by time, not by tries: a loaded CI machine may take many seconds to start it.
                with anyio.fail_after(60):
                    while True:
                        with suppress(httpx2.HTTPError):
                            if (await http.get(url + "/healthz")).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
                # every HTTP surface, with no token, a wrong token and a good one
                for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Bearer {ALICE}"}):
                    for method, path in (("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/images/1"),
                                         ("POST", "/mcp"), ("GET", "/mcp")):
                        resp = await http.request(method, url + path, headers={
                            **headers, "Accept": "application/json, text/event-stream"}, json={})
                        evidence.append(resp.text + json.dumps(dict(resp.headers)))

            faults: list[Fault | None] = [
                None, Fault(kind="http", status=429, headers={"Retry-After": "1"}), Fault(kind="http", status=500),
                Fault(kind="http", status=401, body=json.dumps({"statusCode": 401, "message": "Access denied"})),
                Fault(kind="hang"), Fault(kind="reset"), Fault(kind="html"), Fault(kind="truncated"),
                Fault(kind="no_url"), Fault(kind="url", body=f"{sim.url}/images/missing.png"),
                Fault(kind="url", body=f"{sim.url}/_sim/big.png?bytes=20000000"),
                Fault(kind="url", body="https://not-allowed.example/x.png"),
            ]
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=30) as http,
                Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
            ):
                await client.list_tools()
                for fault in faults:
                    if fault is not None:
                        sim.push(fault)
                    result = await client.call_tool("pix_generate", {"prompt": "canary " + "long " * 30})
                    evidence.append(result.model_dump_json())
                bad = await client.call_tool("pix_generate", {"prompt": "", "width": 3})
                evidence.append(bad.model_dump_json())
                with anyio.move_on_after(0.3):
                    sim.push(Fault(kind="slow", delay=5))
                    await client.call_tool("pix_generate", {"prompt": "cancelled"})
                for name, args in (("list_generations", {"limit": 50}), ("get_generation", {"id": 1}),
                                   ("get_generation", {"id": 999}), ("pix_status", {})):
                    evidence.append((await client.call_tool(name, args)).model_dump_json())
                evidence.append((await client.read_resource("pixazo://generations/1")).model_dump_json())
                evidence.append((await client.read_resource("pixazo://generations/1/image")).model_dump_json())
            async with Client(sse_client(url + "/sse", headers={"Authorization": f"Bearer {BOB}"})) as legacy:
                evidence.append((await legacy.call_tool("pix_generate", {"prompt": "legacy"})).model_dump_json())
            # a burst over the rate limit
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=30) as http,
                Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
            ):
                burst = await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"b{i}"})
                                               for i in range(45)))
                evidence.extend(r.model_dump_json() for r in burst)
            assert sum(r.is_error for r in burst) >= 5
            db_bytes = (tmp_path / "pixazo.db").read_bytes()
            wal = tmp_path / "pixazo.db-wal"
            wal_bytes = wal.read_bytes() if wal.exists() else b""
            assert wal_bytes  # the WAL is live while the server runs: it must be searched too
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            stdout.close()
            stderr.close()
        assert all(KEY not in str(h) for h in sim.stats.headers)  # (the key header is not recorded at all)

    logs = (tmp_path / "stdout.log").read_text()
    errors = (tmp_path / "stderr.log").read_text()
    db_after = (tmp_path / "pixazo.db").read_bytes()
    haystacks = {"evidence": "\n".join(evidence), "stdout": logs, "stderr": errors}
    for name, text in haystacks.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} found in {name}"
    for name, blob in {"db": db_bytes, "wal": wal_bytes, "db after": db_after}.items():
        for canary in CANARIES:
            assert canary.encode() not in blob, f"{canary} found in {name}"

    # the canonical line: one JSON object per tool call, with its fields, and prompts cut short
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line["logger"] == "pixazo.calls"]
    generate = [c for c in calls if c["tool"] == "pix_generate"]
    assert len(generate) == len(faults) + 1 + 1 + 1 + 45
    for call in calls:
        assert {"request_id", "caller", "tool", "status", "attempts", "duration_ms"} <= call.keys()
    assert {c["caller"] for c in generate} == {"alice", "bob"}
    assert max(len(c.get("prompt", "")) for c in generate) <= 21
    statuses = {c["status"] for c in generate}
    assert {"SUCCESS", "HTTP_500", "HTTP_401", "TIMEOUT", "EXCEPTION", "DOWNLOAD_FAILED", "RATE_LIMITED",
            "CANCELLED"} <= statuses
    retried = [c for c in generate if c["attempts"] == 2]
    assert retried  # the 429 was retried
