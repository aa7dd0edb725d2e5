"""Surviving a real upstream: bounds, retries, timeouts, the cap, the queue, the breaker, cancellation."""

from __future__ import annotations

import asyncio
import email.utils
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from app.pixazo.simulator import Fault, Simulator
from tests.conftest import free_port, http_client, in_memory_client, live_server, make_settings, rows

FAST = {"retry_base_s": 0.01, "retry_cap_s": 0.05}


async def call(settings: Any, **arguments: Any) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool("pix_generate", {"prompt": "p", **arguments})


async def test_every_numeric_field_states_its_bounds_in_the_schema(tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "pix_generate"]
    props = tool.input_schema["properties"]
    expected = {"width": (512, 1536), "height": (512, 1536), "num_steps": (1, 20), "guidance_scale": (1, 15),
                "seed": (0, 4294967295)}
    for name, (low, high) in expected.items():
        assert (props[name]["minimum"], props[name]["maximum"]) == (low, high), name
    assert props["width"]["multipleOf"] == 8
    assert (props["prompt"]["minLength"], props["prompt"]["maxLength"]) == (1, 2000)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"prompt": ""}, "`prompt` must be a string of 1 to 2000 characters"),
        ({"prompt": "x" * 2001}, "`prompt` must be a string of 1 to 2000 characters"),
        ({"negative_prompt": "n" * 2001}, "`negative_prompt` must be a string of 0 to 2000 characters"),
        ({"width": 511}, "`width` must be an integer from 512 to 1536, a multiple of 8"),
        ({"height": 1000 + 1}, "`height` must be an integer from 512 to 1536, a multiple of 8"),
        ({"num_steps": 21}, "`num_steps` must be an integer from 1 to 20"),
        ({"guidance_scale": 0.5}, "`guidance_scale` must be a number from 1 to 15"),
        ({"seed": 4294967296}, "`seed` must be an integer from 0 to 4294967295"),
        ({"width": "wide"}, "`width` must be an integer from 512 to 1536"),
    ],
)
async def test_out_of_bounds_input_is_refused_with_zero_upstream_calls(
        tmp_path: Path, sim: Simulator, arguments: dict[str, Any], named: str) -> None:
    settings = make_settings(tmp_path, sim.url)
    result = await call(settings, **arguments)
    assert result.is_error
    assert named in result.content[0].text
    assert sim.stats.requests == 0


async def test_429_with_retry_after_seconds_is_retried_after_that_delay(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    sim.push(Fault(kind="http", status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    result = await call(settings)
    assert result.structured_content["status"] == "SUCCESS"
    assert time.monotonic() - started >= 0.9
    assert sim.stats.requests == 2
    assert rows(settings.db_path)[0]["attempts"] == 2


async def test_429_with_retry_after_as_an_http_date_is_honoured(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    sim.push(Fault(kind="http", status=429, headers={"Retry-After": when}))
    started = time.monotonic()
    result = await call(settings)
    assert result.structured_content["status"] == "SUCCESS"
    assert time.monotonic() - started >= 0.9
    assert rows(settings.db_path)[0]["attempts"] == 2


async def test_a_retry_after_beyond_the_deadline_fails_now_and_says_when(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, deadline_s=5, **FAST)
    sim.push(Fault(kind="http", status=429, headers={"Retry-After": "120"}))
    result = await call(settings)
    assert result.is_error
    assert "Try again in 120 seconds." in result.content[0].text
    assert sim.stats.requests == 1
    assert rows(settings.db_path)[0]["status"] == "HTTP_429"


async def test_503_then_success(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    sim.push(Fault(kind="http", status=503), Fault(kind="http", status=502))
    result = await call(settings)
    assert result.structured_content["status"] == "SUCCESS"
    (row,) = rows(settings.db_path)
    assert row["attempts"] == 3


async def test_retries_stop_at_the_configured_maximum(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_retries=2, **FAST)
    sim.push(*(Fault(kind="http", status=503) for _ in range(5)))
    result = await call(settings)
    assert result.is_error
    assert sim.stats.requests == 3
    (row,) = rows(settings.db_path)
    assert (row["status"], row["attempts"]) == ("HTTP_503", 3)


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_errors_that_may_have_made_an_image_or_will_not_change_are_not_retried(
        tmp_path: Path, sim: Simulator, status: int) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    sim.push(Fault(kind="http", status=status, body='{"error": "internal detail 7f3a"}'))
    result = await call(settings)
    assert result.is_error
    assert "internal detail 7f3a" not in result.content[0].text  # upstream bodies stay on the row
    assert sim.stats.requests == 1
    (row,) = rows(settings.db_path)
    assert (row["status"], row["attempts"], row["upstream_error"]) == (f"HTTP_{status}", 1, "internal detail 7f3a")
    assert "internal detail 7f3a" not in row["error"]


async def test_a_read_timeout_after_sending_is_not_retried(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, timeout_s=0.5, **FAST)
    sim.push(Fault(kind="hang"))
    result = await call(settings)
    assert result.is_error
    assert "may still have been made" in result.content[0].text
    assert sim.stats.requests == 1
    (row,) = rows(settings.db_path)
    assert (row["status"], row["attempts"]) == ("TIMEOUT", 1)


async def test_a_connection_reset_after_sending_is_not_retried(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    sim.push(Fault(kind="reset"))
    result = await call(settings)
    assert result.is_error
    assert sim.stats.requests == 1
    assert rows(settings.db_path)[0]["status"] == "EXCEPTION"


async def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"http://127.0.0.1:{free_port()}", max_retries=2, **FAST)
    result = await call(settings)
    assert result.is_error
    assert "could not reach Pixazo" in result.content[0].text
    (row,) = rows(settings.db_path)
    assert (row["status"], row["attempts"]) == ("EXCEPTION", 3)


@pytest.mark.parametrize(("kind", "error"), [("html", "not valid JSON"), ("truncated", "not valid JSON"),
                                             ("no_url", "no imageUrl")])
async def test_garbage_answers_end_as_clear_errors(tmp_path: Path, sim: Simulator, kind: str, error: str) -> None:
    settings = make_settings(tmp_path, sim.url, **FAST)
    sim.push(Fault(kind=kind))
    result = await call(settings)
    assert result.is_error
    assert error in result.content[0].text
    assert sim.stats.requests == 1
    assert rows(settings.db_path)[0]["status"] == "EXCEPTION"


async def test_the_cap_bounds_calls_in_flight_while_a_crowd_waits(tmp_path: Path) -> None:
    async with Simulator(latency=0.3) as sim:
        settings = make_settings(tmp_path, sim.url, max_concurrency=3, inline_image="none")
        async with in_memory_client(settings) as client:
            results = await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"c{i}"})
                                             for i in range(12)))
    assert all(not r.is_error for r in results)
    assert sim.stats.max_in_flight == 3
    assert sim.stats.requests == 12
    assert max(r["queue_ms"] for r in rows(settings.db_path)) >= 500


async def test_a_call_that_waits_too_long_for_a_slot_times_out_unsent(tmp_path: Path) -> None:
    async with Simulator(latency=1.0) as sim:
        settings = make_settings(tmp_path, sim.url, max_concurrency=1, queue_timeout_s=0.2, inline_image="none")
        async with in_memory_client(settings) as client:
            first, second = await asyncio.gather(
                client.call_tool("pix_generate", {"prompt": "first"}),
                client.call_tool("pix_generate", {"prompt": "second"}))
    assert sim.stats.requests == 1
    statuses = sorted((r.is_error, r.content[0].text) for r in (first, second))
    assert statuses[0][0] is False
    assert "no slot to call Pixazo freed up within 0.2 seconds. Nothing was sent." in statuses[1][1]
    assert sorted(r["status"] for r in rows(settings.db_path)) == ["SUCCESS", "TIMEOUT"]


async def test_the_breaker_opens_fails_fast_then_one_probe_closes_it(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_retries=0, breaker_threshold=2, breaker_cooldown_s=0.5,
                             inline_image="none")
    sim.push(Fault(kind="http", status=500), Fault(kind="http", status=500))
    async with live_server(settings) as live, http_client(live) as client, httpx2.AsyncClient() as http:
        for _ in range(2):
            assert (await client.call_tool("pix_generate", {"prompt": "p"})).is_error
        health = (await http.get(live.url + "/healthz")).json()
        assert health["breaker"]["state"] == "open"
        blocked = await client.call_tool("pix_generate", {"prompt": "p"})
        assert blocked.is_error
        assert "pausing calls" in blocked.content[0].text
        assert sim.stats.requests == 2  # failed fast: nothing sent
        await asyncio.sleep(0.6)
        assert (await http.get(live.url + "/healthz")).json()["breaker"]["state"] == "half_open"
        probe = await client.call_tool("pix_generate", {"prompt": "probe"})
        assert not probe.is_error
        assert (await http.get(live.url + "/healthz")).json()["breaker"]["state"] == "closed"
    assert [r["status"] for r in rows(settings.db_path)] == ["HTTP_500", "HTTP_500", "UNAVAILABLE", "SUCCESS"]


async def test_a_failed_probe_reopens_the_breaker(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_retries=0, breaker_threshold=1, breaker_cooldown_s=0.3,
                             inline_image="none")
    sim.push(Fault(kind="http", status=502), Fault(kind="http", status=502))
    async with in_memory_client(settings) as client:
        await client.call_tool("pix_generate", {"prompt": "a"})
        await asyncio.sleep(0.35)
        await client.call_tool("pix_generate", {"prompt": "probe"})
        again = await client.call_tool("pix_generate", {"prompt": "b"})
    assert "pausing calls" in again.content[0].text
    assert [r["status"] for r in rows(settings.db_path)] == ["HTTP_502", "HTTP_502", "UNAVAILABLE"]


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_a_caller_that_gives_up_aborts_the_upstream_request(tmp_path: Path, mode: str) -> None:
    async with Simulator(latency=5.0) as sim:
        settings = make_settings(tmp_path, sim.url)
        async with live_server(settings) as live, http_client(live, mode=mode) as client:
            await client.list_tools()
            with anyio.move_on_after(0.5):
                await client.call_tool("pix_generate", {"prompt": "never mind"})
            for _ in range(100):
                if sim.stats.aborted == 1 and rows(settings.db_path)[0]["status"] != "PENDING":
                    break
                await asyncio.sleep(0.05)
            # the server keeps serving after the cancellation
            assert (await client.call_tool("list_generations", {})).structured_content["generations"]
    assert sim.stats.aborted == 1
    assert sim.stats.completed == 0
    (row,) = rows(settings.db_path)
    assert row["status"] == "CANCELLED"


async def test_a_cancel_during_the_download_keeps_the_image_url_on_the_row(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    slow = f"{sim.url}/_sim/slow.png?delay=5"
    sim.push(Fault(kind="url", body=slow))
    async with live_server(settings) as live, http_client(live) as client:
        await client.list_tools()
        with anyio.move_on_after(0.5):
            await client.call_tool("pix_generate", {"prompt": "made, then abandoned"})
        for _ in range(100):
            if rows(settings.db_path)[0]["status"] != "PENDING":
                break
            await asyncio.sleep(0.05)
    (row,) = rows(settings.db_path)
    assert (row["status"], row["image_url"]) == ("CANCELLED", slow)
