"""Failed authentication is logged and slows the failing address down, never another (issue 11, point 5)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx2
import pytest

from app.pixazo.simulator import Simulator
from tests.conftest import live_server, make_settings
from tests.test_team import ALICE, BOB, INIT, MCP_HEADERS, TOKENS, bearer

ATTACKER = {"X-Forwarded-For": "203.0.113.7"}  # uvicorn trusts X-Forwarded-For from loopback
NEIGHBOUR = {"X-Forwarded-For": "203.0.113.8"}
WRONG = [f"wrong-token-{i}-0123456789abcdef" for i in range(6)]


async def test_failures_are_logged_and_the_failing_address_is_slowed_down_alone(
        tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, auth_failure_limit=3, auth_block_max_s=30)
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        failures = [
            await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **ATTACKER, **bearer(WRONG[0])}),
            await http.get(f"{live.url}/images/1", headers={**ATTACKER, **bearer(WRONG[1])}),
            await http.post(f"{live.url}/login", data={"token": WRONG[2]}, headers=ATTACKER),
        ]
        blocked = [
            await http.get(f"{live.url}/metrics", headers={**ATTACKER, **bearer(WRONG[3])}),
            await http.post(f"{live.url}/login", data={"token": WRONG[4]}, headers=ATTACKER),
            # A valid token from the blocked address waits too (else the block would not slow guessing).
            await http.get(f"{live.url}/metrics", headers={**ATTACKER, **bearer(ALICE)}),
        ]
        neighbour = await http.get(f"{live.url}/metrics", headers={**NEIGHBOUR, **bearer(BOB)})
        local = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **bearer(ALICE)})
        healthz = await http.get(f"{live.url}/healthz", headers=ATTACKER)  # no credentials: never blocked
        deadline = time.monotonic() + 10
        attacker_alice = {**ATTACKER, **bearer(ALICE)}
        while (after := await http.get(f"{live.url}/metrics", headers=attacker_alice)).status_code == 429:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        # The success reset the address: one more mistake is a plain 401 again.
        again = await http.get(f"{live.url}/metrics", headers={**ATTACKER, **bearer(WRONG[5])})
    assert [r.status_code for r in failures] == [401, 401, 401]
    assert [r.status_code for r in blocked] == [429, 429, 429]
    assert blocked[0].headers["retry-after"] == "1"
    assert "Too many failed authentication attempts" in blocked[0].json()["error_description"]
    assert neighbour.status_code == local.status_code == healthz.status_code == after.status_code == 200
    assert again.status_code == 401

    logged = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert [(r.client, r.path, r.failures) for r in logged] == [  # type: ignore[attr-defined]
        ("203.0.113.7", "/mcp", 1), ("203.0.113.7", "/images/1", 2), ("203.0.113.7", "/login", 3),
        ("203.0.113.7", "/metrics", 1)]
    assert logged[2].credential == "login form"  # type: ignore[attr-defined]
    assert logged[0].credential == "Bearer token"  # type: ignore[attr-defined]
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert not [token for token in [*WRONG, ALICE, BOB] if token in text]
