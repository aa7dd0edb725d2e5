"""Extra pix_generate arguments are kept within caps (count, depth, size); NaN and Infinity never."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from app.core.extras import ExtraCaps, extra_problem
from app.pixazo.simulator import Simulator
from tests.conftest import http_client, in_memory_client, live_server, make_settings, rows

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("extra", "problem"), [
    ({"team": "design", "tags": ["a", "b"], "meta": {"k": {"v": [1, 2]}}}, None),
    ({f"k{i}": i for i in range(16)}, None),
    ({f"k{i}": i for i in range(17)}, "at most 16 extra arguments are kept per call (got 17)"),
    ({"deep": nested(4)}, None),
    ({"deep": nested(5)}, "extra argument `deep` nests lists or objects more than 4 deep"),
    ({"deep": nested(100_000)}, "extra argument `deep` nests lists or objects more than 4 deep"),
    ({"note": "x" * 4000}, None),
    ({"note": "x" * 4100}, "extra arguments may take at most 4096 bytes as JSON (got 4111)"),
    ({"note": "é" * 2100}, "extra arguments may take at most 4096 bytes as JSON (got 4211)"),  # bytes, not chars
    ({"score": math.nan}, "extra argument `score` holds NaN or Infinity, which JSON cannot store"),
    ({"m": {"x": [1.0, -math.inf]}}, "extra argument `m` holds NaN or Infinity, which JSON cannot store"),
])
def test_extra_problem_names_the_cap(extra: dict[str, Any], problem: str | None) -> None:
    assert extra_problem(extra, ExtraCaps()) == problem


async def test_calls_over_a_cap_are_refused_naming_it_with_nothing_recorded_or_sent(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "pix_generate"]
        huge = await client.call_tool("pix_generate", {"prompt": "p", "blob": "x" * 3_000_000})
        many = await client.call_tool("pix_generate", {"prompt": "p", **{f"tag{i}": i for i in range(40)}})
        deep = await client.call_tool("pix_generate", {"prompt": "p", "tree": nested(6)})
        big_guidance = await client.call_tool("pix_generate", {"prompt": "p", "guidance_scale": 1e308})
        kept = await client.call_tool("pix_generate", {"prompt": "kept", "ticket": "T-1", "labels": ["a"]})
    assert "(at most 16, 4096 bytes, 4 deep)" in (tool.description or "")
    expected = {
        "huge": (huge, "extra arguments may take at most 4096 bytes as JSON"),
        "many": (many, "at most 16 extra arguments are kept per call (got 40)"),
        "deep": (deep, "extra argument `tree` nests lists or objects more than 4 deep"),
    }
    for name, (result, text) in expected.items():
        assert result.is_error, name
        assert text in result.content[0].text, name
        assert "Nothing was recorded or sent to Pixazo." in result.content[0].text, name
    assert big_guidance.is_error
    assert "`guidance_scale` must be a number from 1 to 15" in big_guidance.content[0].text
    # Refused like any schema-invalid call: no row, no request to Pixazo.
    assert not kept.is_error
    assert sim.stats.requests == 1
    (row,) = rows(settings.db_path)
    assert (row["prompt"], json.loads(row["parameters_json"])["ticket"]) == ("kept", "T-1")


async def test_rate_limited_calls_store_at_most_the_cap(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none", rate_limit_per_minute=1,
                             auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"), max_extra_bytes=1024)
    async with live_server(settings) as live, http_client(live, headers={"Authorization": f"Bearer {ALICE}"}) as c:
        first = await c.call_tool("pix_generate", {"prompt": "first", "note": "x" * 1000})
        limited = await c.call_tool("pix_generate", {"prompt": "limited", "note": "y" * 1000})
        over = await c.call_tool("pix_generate", {"prompt": "over", "note": "z" * 3_000_000})
        listed = await c.call_tool("list_generations", {"limit": 20})
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}) as http:
            health = await http.get(live.url + "/healthz")
    assert not first.is_error
    assert "Rate limit reached" in limited.content[0].text
    assert "at most 1024 bytes as JSON" in over.content[0].text
    assert [(r["prompt"], r["status"]) for r in rows(settings.db_path)] == [
        ("first", "SUCCESS"), ("limited", "RATE_LIMITED")]
    assert all(len(r["parameters_json"]) < 1024 + 200 for r in rows(settings.db_path))
    assert len(json.dumps(listed.structured_content)) < 10_000
    assert health.status_code == 200


async def test_nan_sent_as_raw_json_is_refused_and_stored_json_stays_valid(tmp_path: Path, sim: Simulator) -> None:
    """A hand-written JSON-RPC body with NaN and Infinity tokens (Python's json writes them)."""
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        opened = await http.post(live.mcp_url, json=init, headers=headers)
        session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"],
                   "MCP-Protocol-Version": "2025-11-25"}
        await http.post(live.mcp_url, headers=session,
                        json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        bodies = [json.dumps({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                              "params": {"name": "pix_generate", "arguments": args}})
                  for i, args in enumerate(({"prompt": "p", "score": math.nan}, {"prompt": "p", "v": [-math.inf]},
                                            {"prompt": "p", "guidance_scale": math.nan},
                                            {"prompt": "fine", "score": 0.5}))]
        answers = [(await http.post(live.mcp_url, content=body, headers=session)).text for body in bodies]
    assert '"score": NaN' in bodies[0]  # the tokens really are on the wire
    assert "[-Infinity]" in bodies[1]
    assert "holds NaN or Infinity" in answers[0]
    assert "holds NaN or Infinity" in answers[1]
    assert "`guidance_scale` must be a number from 1 to 15" in answers[2]
    assert '"isError":true' not in answers[3].replace(" ", "")
    with sqlite3.connect(settings.db_path) as conn:
        checks = conn.execute("SELECT prompt, json_valid(parameters_json) FROM generations").fetchall()
    conn.close()
    assert checks == [("fine", 1)]
