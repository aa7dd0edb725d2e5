"""A hosted team endpoint: named callers, per-caller limits, Host/Origin checks, metrics, status."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from pydantic import SecretStr

from app.identity.tokens import ConfigError, check_exposure, load_tokens
from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import LiveServer, http_client, live_server, make_settings, rows

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
TOKENS = SecretStr(f"alice:{ALICE},bob:{BOB}")
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_requests_without_a_valid_token_get_401_and_healthz_stays_open(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        missing = await http.post(live.mcp_url, json=INIT, headers=MCP_HEADERS)
        wrong = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **bearer("x" * 24)})
        good = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **bearer(ALICE)})
        sse = await http.get(live.url + "/sse")
        image = await http.get(live.url + "/images/1")
        metrics = await http.get(live.url + "/metrics")
        health = await http.get(live.url + "/healthz")
    for resp in (missing, wrong, sse, image, metrics):
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert good.status_code == 200
    assert health.status_code == 200


async def test_each_named_caller_is_recorded_on_its_rows_and_listed(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, inline_image="none")
    async with live_server(settings) as live:
        async with http_client(live, headers=bearer(ALICE)) as alice:
            await alice.call_tool("pix_generate", {"prompt": "from alice"})
        async with http_client(live, headers=bearer(BOB), mode="legacy") as bob:
            await bob.call_tool("pix_generate", {"prompt": "from bob"})
            listed = (await bob.call_tool("list_generations", {"caller": "alice"})).structured_content
        async with Client(sse_client(live.url + "/sse", headers=bearer(BOB))) as legacy_sse:
            await legacy_sse.call_tool("pix_generate", {"prompt": "bob over sse"})
        async with httpx2.AsyncClient(headers=bearer(ALICE)) as http:
            image = await http.get(f"{live.url}/images/1")
    assert [(r["prompt"], r["caller"]) for r in rows(settings.db_path)] == [
        ("from alice", "alice"), ("from bob", "bob"), ("bob over sse", "bob")]
    assert [(g["prompt"], g["caller"]) for g in listed["generations"]] == [("from alice", "alice")]
    assert image.status_code == 200
    # the callers' tokens never travel to Pixazo; only the server's key does
    assert all("Authorization" not in h and "authorization" not in h for h in sim.stats.headers)


async def test_a_legacy_session_cannot_be_reused_with_another_token(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        opened = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **bearer(ALICE)})
        session = opened.headers["mcp-session-id"]
        hijack = await http.post(live.mcp_url, headers={**MCP_HEADERS, **bearer(BOB), "Mcp-Session-Id": session,
                                                        "MCP-Protocol-Version": "2025-11-25"},
                                 json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert hijack.status_code in (403, 404)


async def burst(live: LiveServer, token: str, count: int) -> list[Any]:
    async with http_client(live, headers=bearer(token)) as client:
        return list(await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"burst {i}"})
                                           for i in range(count))))


async def test_per_minute_limit_lets_exactly_the_allowance_through_a_burst(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, rate_limit_per_minute=5, inline_image="none")
    async with live_server(settings) as live:
        alice, bob = await asyncio.gather(burst(live, ALICE, 12), burst(live, BOB, 3))
        async with http_client(live, headers=bearer(ALICE)) as client:
            status = (await client.call_tool("pix_status", {})).structured_content
    refused = [r for r in alice if r.is_error]
    assert len(alice) - len(refused) == 5
    assert all("5 generations per minute" in r.content[0].text and "Try again in" in r.content[0].text
               for r in refused)
    assert not [r for r in bob if r.is_error]  # one caller's limit never touches another's
    assert sim.stats.requests == 8
    statuses = [(r["caller"], r["status"]) for r in rows(settings.db_path)]
    assert statuses.count(("alice", "RATE_LIMITED")) == 7
    assert statuses.count(("alice", "SUCCESS")) == 5
    assert status["per_minute"]["remaining"] == 0
    assert status["caller"] == "alice"


async def test_daily_limit_holds_under_a_burst_and_across_a_restart(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, daily_limit=4, inline_image="none")
    async with live_server(settings) as live:
        results = await burst(live, ALICE, 9)
    assert sum(not r.is_error for r in results) == 4
    assert "Daily limit reached: 4 generations per UTC day" in next(r for r in results if r.is_error).content[0].text
    async with live_server(settings) as live:
        again = await burst(live, ALICE, 1)
        other = await burst(live, BOB, 1)
    assert again[0].is_error
    assert not other[0].is_error
    assert sim.stats.requests == 5


async def test_foreign_host_gets_421_and_foreign_origin_403(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        host = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, "Host": "evil.example"})
        origin = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, "Origin": "http://evil.example"})
        ok = await http.post(live.mcp_url, json=INIT, headers=MCP_HEADERS)
    assert (host.status_code, origin.status_code, ok.status_code) == (421, 403, 200)


async def test_allowed_hosts_and_origins_come_from_settings(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, allowed_hosts=["mcp.example.com"],
                             allowed_origins=["https://app.example.com"])
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        named = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, "Host": "mcp.example.com"})
        with_port = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, "Host": "mcp.example.com:443",
                                                                      "Origin": "https://app.example.com"})
        loopback = await http.post(live.mcp_url, json=INIT, headers=MCP_HEADERS)
        origin = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, "Host": "mcp.example.com",
                                                                   "Origin": "http://127.0.0.1:1"})
    assert (named.status_code, with_port.status_code) == (200, 200)
    assert loopback.status_code == 421
    assert origin.status_code == 403


async def test_metrics_after_a_few_calls(tmp_path: Path, sim: Simulator) -> None:
    from app.pixazo.simulator import Fault

    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, inline_image="none", retry_base_s=0.01)
    sim.push(Fault(kind="http", status=503))
    async with live_server(settings) as live:
        await burst(live, ALICE, 2)
        sim.push(Fault(kind="http", status=400))
        await burst(live, BOB, 1)
        async with httpx2.AsyncClient(headers=bearer(BOB)) as http:
            text = (await http.get(live.url + "/metrics")).text
    assert 'pixazo_generations_total{caller="alice",status="SUCCESS"} 2.0' in text
    assert 'pixazo_generations_total{caller="bob",status="HTTP_400"} 1.0' in text
    assert "pixazo_retries_total 1.0" in text
    assert "pixazo_upstream_latency_seconds_count 4.0" in text
    assert "pixazo_queue_wait_seconds_count 3.0" in text
    assert "pixazo_calls_in_flight 0.0" in text
    assert 'pixazo_breaker_state{pixazo_breaker_state="closed"} 1.0' in text
    # Where each call's own time went: three rows admitted, two images kept, no thumbnail asked for.
    for stage, count in (("admit", 3), ("download_wait", 2), ("download", 2), ("finish", 2)):
        assert f'pixazo_stage_seconds_count{{stage="{stage}"}} {count}.0' in text, stage
    assert 'stage="thumbnail"' not in text


async def test_the_thumbnail_stages_are_timed(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live:
        await burst(live, ALICE, 2)
        async with httpx2.AsyncClient(headers=bearer(BOB)) as http:
            text = (await http.get(live.url + "/metrics")).text
    for stage in ("thumbnail_wait", "thumbnail"):
        assert f'pixazo_stage_seconds_count{{stage="{stage}"}} 2.0' in text, stage
    decode = float(re.search(r'^pixazo_stage_seconds_sum\{stage="thumbnail"\} (\S+)$', text, re.M)[1])
    assert 0 < decode < 10


async def test_pix_status_without_limits_or_tokens(tmp_path: Path, sim: Simulator) -> None:
    from tests.conftest import in_memory_client

    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        status = (await client.call_tool("pix_status", {})).structured_content
    assert status["caller"] is None
    assert status["per_minute"] is None
    assert status["daily"] is None
    assert status["api_key_configured"] is True
    assert status["breaker"] == "closed"


def test_an_open_server_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    exposed = make_settings(tmp_path, host="0.0.0.0")  # noqa: S104 - the case under test
    with pytest.raises(ConfigError, match=r"refusing to serve on 0\.0\.0\.0 without tokens"):
        check_exposure(exposed, {})
    assert "anyone who reaches" in (check_exposure(exposed.model_copy(update={"allow_anonymous": True}), {}) or "")
    assert check_exposure(exposed, {"alice": ALICE}) is None
    assert "loopback only" in (check_exposure(make_settings(tmp_path), {}) or "")


def test_tokens_from_a_file_and_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# team\nbob:{BOB}\n\ncarol:carol-token-000000000000\n")
    settings = Settings(_env_file=None, auth_tokens=SecretStr(f"alice:{ALICE}"),  # type: ignore[call-arg]
                        auth_tokens_file=token_file)
    assert load_tokens(settings) == {"alice": ALICE, "bob": BOB, "carol": "carol-token-000000000000"}
    with pytest.raises(ConfigError, match="shorter than 16") as info:
        load_tokens(Settings(_env_file=None, auth_tokens=SecretStr("dave:short")))  # type: ignore[call-arg]
    assert "short" not in str(info.value).replace("shorter", "")


async def test_our_own_routes_refuse_foreign_hosts_but_probes_pass(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        gallery = await http.get(live.url + "/gallery", headers={"Host": "rebound.example"})
        image = await http.get(live.url + "/images/1", headers={"Host": "rebound.example"})
        origin = await http.get(live.url + "/gallery", headers={"Origin": "http://rebound.example"})
        health = await http.get(live.url + "/healthz", headers={"Host": "10.1.2.3:8000"})
        own = await http.get(live.url + "/gallery")
    assert (gallery.status_code, image.status_code, origin.status_code) == (421, 421, 403)
    assert (health.status_code, own.status_code) == (200, 200)
