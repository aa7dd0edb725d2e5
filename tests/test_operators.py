"""Operators' views (issue 19, points 11 and 12, and Vary): under PIXAZO_HISTORY_VISIBILITY=own, /metrics
answers only PIXAZO_OPERATORS and the gallery's filters come from the viewer's own rows; /healthz gives a
caller without an operator's credential its status alone. On a real uvicorn socket."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2
import pytest
from pydantic import SecretStr

from app.pixazo.simulator import Fault, Simulator
from tests.conftest import free_port, http_client, live_server, make_settings

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
OPS = "ops-token-0123456789abcdefgh"
TOKENS = SecretStr(f"alice:{ALICE},bob:{BOB},ops:{OPS}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seen_by_each(tmp_path: Path, sim: Simulator, visibility: str) -> dict[str, object]:
    """Alice makes an image, bob a failed call; then what /metrics, /healthz and the filters show whom."""
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, history_visibility=visibility,
                             operators=["ops"], max_retries=0)
    seen: dict[str, object] = {}
    async with live_server(settings) as live, AsyncExitStack() as stack:
        alice = await stack.enter_async_context(http_client(live, headers=auth(ALICE)))
        bob = await stack.enter_async_context(http_client(live, headers=auth(BOB)))
        assert not (await alice.call_tool("pix_generate", {"prompt": "a garden"})).is_error
        sim.push(Fault("http", status=400, body='{"error": "bad"}'))
        assert (await bob.call_tool("pix_generate", {"prompt": "a boat"})).is_error
        async with httpx2.AsyncClient(base_url=live.url, timeout=30) as http:
            for who, token in (("alice", ALICE), ("ops", OPS)):
                metrics = await http.get("/metrics", headers=auth(token))
                seen[f"metrics {who}"] = metrics.status_code
                seen[f"metrics {who} names bob"] = 'caller="bob"' in metrics.text
                seen[f"healthz {who}"] = sorted((await http.get("/healthz", headers=auth(token))).json())
                gallery = (await http.get("/gallery", headers=auth(token))).text
                seen[f"filters {who}"] = [s for s in ("SUCCESS", "HTTP_400") if f'<option value="{s}"' in gallery]
            anyone = await http.get("/healthz")
            seen["healthz anyone"] = (anyone.status_code, anyone.json())
            seen["metrics anyone"] = (await http.get("/metrics")).status_code
    return seen


DETAILS = ["api_key_configured", "breaker", "database", "database_engine", "image_storage", "in_flight",
           "queued", "status", "version"]


async def test_under_own_only_operators_see_the_whole_server(tmp_path: Path, sim: Simulator) -> None:
    seen = await seen_by_each(tmp_path, sim, "own")
    assert seen["metrics alice"] == 403  # the counters name bob and his spend
    assert seen["metrics ops"] == 200
    assert seen["metrics ops names bob"] is True
    assert seen["metrics anyone"] == 401
    assert seen["healthz alice"] == ["status"]
    assert seen["healthz ops"] == DETAILS
    assert seen["healthz anyone"] == (200, {"status": "ok"})
    assert seen["filters alice"] == ["SUCCESS"]  # bob's HTTP_400 is not hers to know of
    assert seen["filters ops"] == []  # an operator's gallery is still its own rows under `own`


async def test_under_team_nothing_changes_for_callers(tmp_path: Path, sim: Simulator) -> None:
    seen = await seen_by_each(tmp_path, sim, "team")
    assert seen["metrics alice"] == seen["metrics ops"] == 200
    assert seen["metrics alice names bob"] is True
    assert seen["healthz alice"] == seen["healthz ops"] == DETAILS
    assert seen["filters alice"] == ["SUCCESS", "HTTP_400"]
    # Without credentials, /healthz says only whether it is up, under team too.
    assert seen["healthz anyone"] == (200, {"status": "ok"})
    assert seen["metrics anyone"] == 401


async def test_healthz_gives_the_status_alone_without_credentials_even_when_unavailable(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live, httpx2.AsyncClient(base_url=live.url, timeout=30) as http:
        state = live.server.config.app.state.runtime.state  # type: ignore[attr-defined]
        state.service.draining = True
        draining = await http.get("/healthz")
        detailed = await http.get("/healthz", headers=auth(OPS))
        state.service.draining = False
    assert (draining.status_code, draining.json()) == (503, {"status": "draining"})
    assert detailed.status_code == 503
    assert detailed.json()["version"]


async def test_a_server_without_operators_under_own_says_so_at_start(
        tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, history_visibility="own")
    async with live_server(settings) as live, httpx2.AsyncClient(base_url=live.url, timeout=30) as http:
        refused = await http.get("/metrics", headers=auth(OPS))
    assert refused.status_code == 403
    assert "no PIXAZO_OPERATORS" in caplog.text


async def test_an_image_varies_on_each_header_once(tmp_path: Path, sim: Simulator) -> None:
    """Vary listed Cookie twice: once from the route, once from the session middleware."""
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live, http_client(live, headers=auth(ALICE)) as alice:
        assert not (await alice.call_tool("pix_generate", {"prompt": "a garden"})).is_error
        async with httpx2.AsyncClient(base_url=live.url, timeout=30) as browser:
            await browser.post("/login", data={"token": ALICE, "next": "/gallery"})
            by_session = await browser.get("/images/1")
        async with httpx2.AsyncClient(base_url=live.url, timeout=30) as script:
            by_token = await script.get("/images/1", headers=auth(ALICE))
    for answer in (by_session, by_token):
        assert answer.status_code == 200
        assert answer.headers.get_list("vary") == ["Authorization, Cookie"]


async def test_a_real_prometheus_scrapes_metrics_under_own_with_an_operators_token(
        tmp_path: Path, sim: Simulator) -> None:
    """The shipped deploy/prometheus.yml, pointed at a server on loopback: the operator's token (from a
    file, as shipped) scrapes; another caller's token is refused (the target is down)."""
    import asyncio
    import time

    import yaml

    from tests.services import require_program, run_service

    prometheus = require_program("prometheus", "prometheus")
    tokens = SecretStr(f"alice:{ALICE},bob:{BOB},metrics:{OPS}")
    settings = make_settings(tmp_path, sim.url, auth_tokens=tokens, history_visibility="own", operators=["metrics"])
    shipped = yaml.safe_load((Path(__file__).parent.parent / "deploy" / "prometheus.yml").read_text())
    async with live_server(settings) as live, http_client(live, headers=auth(BOB)) as bob:
        assert not (await bob.call_tool("pix_generate", {"prompt": "a boat"})).is_error
        (job,) = shipped["scrape_configs"]
        jobs = []
        for name, token in (("pixazo-mcp", OPS), ("as-alice", ALICE)):
            (tmp_path / f"{name}.token").write_text(token)
            jobs.append({**job, "job_name": name, "scheme": "http", "scrape_interval": "1s",
                         "authorization": {**job["authorization"], "credentials_file": str(tmp_path / f"{name}.token")},
                         "static_configs": [{"targets": [live.url.removeprefix("http://")]}]})
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({**shipped, "global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
        port = free_port()
        argv = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}"]
        with run_service(argv, port, tmp_path / "prometheus.log"):
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
                deadline = time.monotonic() + 60
                while True:
                    found = (await api.get("/api/v1/query", params={"query": "up"})).json()["data"]["result"]
                    up = {r["metric"]["job"]: r["value"][1] for r in found}
                    spend = (await api.get("/api/v1/query", params={
                        "query": 'pixazo_generations_total{caller="bob"}'})).json()["data"]["result"]
                    if len(up) == 2 and spend:
                        break
                    assert time.monotonic() < deadline, f"no scrape in 60 s: {up}"
                    await asyncio.sleep(0.5)
                targets = (await api.get("/api/v1/targets")).json()["data"]["activeTargets"]
    assert up == {"pixazo-mcp": "1", "as-alice": "0"}
    (refused,) = [t for t in targets if t["labels"]["job"] == "as-alice"]
    assert "403" in refused["lastError"]
    assert spend[0]["value"][1] == "1"
