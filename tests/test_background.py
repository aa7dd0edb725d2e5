"""No call lost to a client's patience (issue 20): an image-making call answers PENDING within
PIXAZO_ANSWER_WITHIN_S and goes on without its client; pix_wait collects it from any session (and any
replica); pix_cancel stops it; `wait: false` starts one and answers at once. Against real server
processes with the SDK's client, the simulator playing Pixazo at 60 s latency (released by the test
once the point is made, so that no test waits a minute)."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, ResourceLink

from app.pixazo.gateway import EDITORS, SDXL_PATH
from app.pixazo.simulator import JobFault, Simulator
from tests.conftest import TEST_KEY, rows
from tests.test_instances import server_env
from tests.test_process import server_process
from tests.test_replicas import replicas

pytestmark = pytest.mark.timeout(180)

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
BOUND = {"PIXAZO_ANSWER_WITHIN_S": "2", "PIXAZO_INLINE_IMAGE": "thumbnail", "PIXAZO_POLL_BASE_S": "0.1",
         "PIXAZO_POLL_CAP_S": "0.3"}
UPSCALE = EDITORS["upscale"].path


@asynccontextmanager
async def agent(url: str, token: str | None = None) -> AsyncIterator[Client]:
    """One MCP client session, as a remote agent opens it; closing it drops the connection."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
    ):
        yield client


def submits(sim: Simulator, path: str = SDXL_PATH) -> int:
    return sum(1 for call in sim.stats.calls if call["method"] == "POST" and call["path"] == path)


async def until(predicate: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def assert_image_result(result: CallToolResult, gen_id: int) -> None:
    assert not result.is_error, result.content
    assert result.structured_content["id"] == gen_id
    assert result.structured_content["status"] == "SUCCESS"
    assert result.structured_content["resource_uri"] == f"pixazo://generations/{gen_id}/image"
    assert any(isinstance(c, ResourceLink) for c in result.content)
    (thumb,) = [c for c in result.content if isinstance(c, ImageContent)]
    assert base64.b64decode(thumb.data)[:3] == b"\xff\xd8\xff"  # the inline JPEG thumbnail


async def test_a_slow_call_answers_pending_goes_on_without_its_client_and_a_new_client_collects_it(
        tmp_path: Path) -> None:
    async with Simulator(latency=60, api_key=TEST_KEY) as sim, server_process(tmp_path, sim, **BOUND) as (_, url):
        started = time.monotonic()
        async with agent(url) as first:
            answer = await first.call_tool("pix_generate", {"prompt": "a lighthouse in a storm"})
        answered_in = time.monotonic() - started
        # The first client is gone (its session closed, its connection dropped); Pixazo still draws.
        pending = answer.structured_content
        assert not answer.is_error
        assert pending["status"] == "PENDING"
        assert 1.5 <= answered_in < 10
        assert pending["activity"] == "sent to Pixazo, waiting for the image"
        text = answer.content[0].text  # type: ignore[union-attr]
        assert f"Call pix_wait with id {pending['id']}" in text
        assert (rows(tmp_path / "pixazo.db")[0]["status"]) == "PENDING"
        sim.release()  # Pixazo answers now (instead of in a minute)
        async with agent(url) as second:
            collected = await second.call_tool("pix_wait", {"id": pending["id"]})
            again = await second.call_tool("pix_wait", {"id": pending["id"]})  # finished: at once
    assert_image_result(collected, pending["id"])
    assert collected.content[0].text.startswith(f"Generated image {pending['id']}:")  # type: ignore[union-attr]
    assert again.structured_content == collected.structured_content
    assert submits(sim) == 1  # one image paid for
    (row,) = rows(tmp_path / "pixazo.db")
    assert (row["status"], row["image_path"] is not None) == ("SUCCESS", True)


async def test_a_queue_job_answers_pending_with_its_state_and_is_collected_later(tmp_path: Path) -> None:
    async with Simulator(api_key=TEST_KEY) as sim, server_process(tmp_path, sim, **BOUND) as (_, url):
        async with agent(url) as first:
            source = await first.call_tool("pix_generate", {"prompt": "a fox"})
            assert source.structured_content["status"] == "SUCCESS"
            sim.push(JobFault(state="PROCESSING"))  # runs until the test ends it
            answer = await first.call_tool("pix_upscale", {"image": source.structured_content["id"]})
        pending = answer.structured_content
        assert pending["status"] == "PENDING"
        (request_id,) = sim.jobs
        assert pending["activity"].startswith(f"Pixazo job {request_id}: ")
        sim.finish(request_id)
        async with agent(url) as second:
            collected = await second.call_tool("pix_wait", {"id": pending["id"]})
    assert_image_result(collected, pending["id"])
    assert collected.structured_content["operation"] == "upscale"
    assert collected.content[0].text.startswith(f"Upscaled image {pending['id']}:")  # type: ignore[union-attr]
    assert submits(sim, UPSCALE) == 1


async def test_wait_false_answers_at_once_and_pix_wait_answers_pending_again_until_done(tmp_path: Path) -> None:
    async with (
        Simulator(latency=60, api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **BOUND) as (_, url),
        agent(url) as client,
    ):
        started = time.monotonic()
        answer = await client.call_tool("pix_generate", {"prompt": "a kite", "wait": False})
        at_once = time.monotonic() - started
        gen_id = answer.structured_content["id"]
        short = await client.call_tool("pix_wait", {"id": gen_id, "timeout_s": 0.5})
        sim.release()
        done = await client.call_tool("pix_wait", {"id": gen_id})
    assert answer.structured_content["status"] == "PENDING"
    assert at_once < 1.5
    assert short.structured_content["status"] == "PENDING"
    assert not short.is_error
    assert_image_result(done, gen_id)
    assert submits(sim) == 1
    assert "wait" not in sim.stats.bodies[-1]  # ours, not Pixazo's


async def test_pix_cancel_stops_a_queue_job_and_says_it_may_be_charged(tmp_path: Path) -> None:
    async with (
        Simulator(api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **BOUND) as (_, url),
        agent(url) as client,
    ):
        source = await client.call_tool("pix_generate", {"prompt": "a fox"})
        sim.push(JobFault(state="PROCESSING"))
        started = await client.call_tool("pix_upscale", {"image": source.structured_content["id"], "wait": False})
        gen_id = started.structured_content["id"]
        await until(lambda: len(sim.jobs) == 1)
        (request_id,) = sim.jobs
        await until(lambda: polls(sim, request_id) >= 2)
        cancelled = await client.call_tool("pix_cancel", {"id": gen_id})
        polled = polls(sim, request_id)
        await asyncio.sleep(1.5)  # several poll intervals
        after = polls(sim, request_id)
        twice = await client.call_tool("pix_cancel", {"id": gen_id})
        collected = await client.call_tool("pix_wait", {"id": gen_id})
    assert not cancelled.is_error
    assert cancelled.structured_content == {"id": gen_id, "status": "CANCELLED", "may_be_charged": True,
                                            "cost_usd": cancelled.structured_content["cost_usd"]}
    assert "may still run and be charged" in cancelled.content[0].text  # type: ignore[union-attr]
    assert after == polled  # no more polls
    assert twice.is_error
    assert f"Generation {gen_id} already ended (CANCELLED)" in twice.content[0].text  # type: ignore[union-attr]
    assert collected.is_error
    assert "CANCELLED" in collected.content[0].text  # type: ignore[union-attr]
    assert rows(tmp_path / "pixazo.db", f"id = {gen_id}")[0]["status"] == "CANCELLED"


def polls(sim: Simulator, request_id: str) -> int:
    return sum(1 for call in sim.stats.calls if call["method"] == "GET" and request_id in call["path"])


async def test_pix_cancel_of_a_sync_call_in_the_background(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"sdxl": 0.07}')
    async with (
        Simulator(latency=60, api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **BOUND, PIXAZO_PRICES_FILE=str(prices)) as (_, url),
        agent(url) as client,
    ):
        started = await client.call_tool("pix_generate", {"prompt": "a kite", "wait": False})
        gen_id = started.structured_content["id"]
        await until(lambda: submits(sim) == 1)
        cancelled = await client.call_tool("pix_cancel", {"id": gen_id})
        await until(lambda: sim.stats.aborted >= 1)  # the HTTP call to Pixazo was abandoned
    assert cancelled.structured_content["status"] == "CANCELLED"
    assert cancelled.structured_content["may_be_charged"] is True
    assert cancelled.structured_content["cost_usd"] == 0.07
    assert "had reached Pixazo, which may still charge for it ($0.07)" in cancelled.content[0].text  # type: ignore[union-attr]


async def test_pix_wait_sees_only_what_the_caller_may_see_and_answers_a_finished_one_at_once(
        tmp_path: Path) -> None:
    env = {**BOUND, "PIXAZO_AUTH_TOKENS": f"alice:{ALICE},bob:{BOB}", "PIXAZO_HISTORY_VISIBILITY": "own"}
    async with (
        Simulator(api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **env) as (_, url),
        agent(url, ALICE) as alice,
        agent(url, BOB) as bob,
    ):
        made = await alice.call_tool("pix_generate", {"prompt": "alice's garden"})
        gen_id = made.structured_content["id"]
        started = time.monotonic()
        finished = await alice.call_tool("pix_wait", {"id": gen_id})
        at_once = time.monotonic() - started
        others = await bob.call_tool("pix_wait", {"id": gen_id})
        missing = await alice.call_tool("pix_wait", {"id": 999})
        cancel_others = await bob.call_tool("pix_cancel", {"id": gen_id})
    assert_image_result(finished, gen_id)
    assert at_once < 1.5
    for refused in (others, missing, cancel_others):
        assert refused.is_error
        assert "No generation with id" in refused.content[0].text  # type: ignore[union-attr]


async def test_a_replica_hears_of_a_finish_on_another_at_once(tmp_path: Path, postgres_url: str) -> None:
    async with Simulator(latency=60, api_key=TEST_KEY) as sim:
        env = server_env(tmp_path, sim, postgres_url, **BOUND)
        async with replicas(tmp_path, env, 2) as [(_, first_port), (_, second_port)]:
            async with agent(f"http://127.0.0.1:{first_port}") as on_first:
                answer = await on_first.call_tool("pix_generate", {"prompt": "a bridge"})
            gen_id = answer.structured_content["id"]
            assert answer.structured_content["status"] == "PENDING"
            async with agent(f"http://127.0.0.1:{second_port}") as on_second:
                waiting = asyncio.create_task(on_second.call_tool("pix_wait", {"id": gen_id, "timeout_s": 30}))
                await asyncio.sleep(1.0)  # the second replica is waiting (listening) by now
                assert not waiting.done()
                released = time.monotonic()
                sim.release()
                collected = await waiting
                heard_in = time.monotonic() - released
    assert_image_result(collected, gen_id)
    # Notified, not polled: the image's download and its row's end, then the answer at once.
    assert heard_in < 2.0


async def test_sigterm_lets_background_work_finish_and_records_it(tmp_path: Path) -> None:
    env = {**BOUND, "PIXAZO_SHUTDOWN_GRACE_S": "30"}
    async with Simulator(latency=4, api_key=TEST_KEY) as sim, server_process(tmp_path, sim, **env) as (proc, url):
        async with agent(url) as client:
            answer = await client.call_tool("pix_generate", {"prompt": "a late train", "wait": False})
        await until(lambda: submits(sim) == 1)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 40)
    assert code in (0, 128 + signal.SIGTERM)
    (row,) = rows(tmp_path / "pixazo.db")
    assert (row["id"], row["status"]) == (answer.structured_content["id"], "SUCCESS")
    assert row["image_path"]


async def test_the_unfinished_cap_and_a_rate_limit_hold_with_calls_in_the_background(tmp_path: Path) -> None:
    env = {**BOUND, "PIXAZO_MAX_BACKGROUND_PER_CALLER": "3", "PIXAZO_RATE_LIMIT_PER_MINUTE": "4"}
    async with (
        Simulator(latency=60, api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **env) as (_, url),
        agent(url) as client,
    ):
        burst = await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"a {i}", "wait": False})
                                       for i in range(6)))
        await until(lambda: submits(sim) == 3)
        sim.release()
        for result in burst:
            if not result.is_error:
                assert_image_result(await client.call_tool("pix_wait", {"id": result.structured_content["id"]}),
                                    result.structured_content["id"])
        second = await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"b {i}", "wait": False})
                                        for i in range(3)))
        await asyncio.sleep(0.5)
        sent = submits(sim)
        sim.release()
    refused = [r.content[0].text for r in burst if r.is_error]  # type: ignore[union-attr]
    assert len(refused) == 3
    assert all("already has 3 generations unfinished" in text and "Nothing was sent to Pixazo" in text
               for text in refused)
    assert [r.is_error for r in second].count(False) == 1  # 4 per minute: 3 made, 1 more
    assert all("Rate limit reached" in r.content[0].text for r in second if r.is_error)  # type: ignore[union-attr]
    assert sent == 4


async def test_a_budget_holds_with_calls_in_the_background(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"sdxl": 0.07}')
    env = {**BOUND, "PIXAZO_DAILY_BUDGET_USD": "0.14", "PIXAZO_PRICES_FILE": str(prices)}  # two images
    async with (
        Simulator(latency=60, api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, **env) as (_, url),
        agent(url) as client,
    ):
        burst = await asyncio.gather(*(client.call_tool("pix_generate", {"prompt": f"a {i}", "wait": False})
                                       for i in range(4)))
        await asyncio.sleep(0.5)
        sent = submits(sim)
        sim.release()
    assert [r.is_error for r in burst].count(False) == 2  # calls in flight count at their price
    assert all("Daily budget reached" in r.content[0].text for r in burst if r.is_error)  # type: ignore[union-attr]
    assert sent == 2


async def test_the_gallery_shows_a_pending_generation_as_pending_then_its_image(tmp_path: Path) -> None:
    from tests.conftest import live_server, make_settings

    async with Simulator(latency=60, api_key=TEST_KEY) as sim:
        settings = make_settings(tmp_path, sim.url, answer_within_s=1)
        async with live_server(settings) as live, agent(live.url) as client:
            answer = await client.call_tool("pix_generate", {"prompt": "a slow sunrise", "wait": False})
            gen_id = answer.structured_content["id"]
            async with httpx2.AsyncClient(base_url=live.url, timeout=30) as browser:
                page = (await browser.get(f"/gallery/{gen_id}")).text
                listing = (await browser.get("/gallery")).text
                sim.release()
                await client.call_tool("pix_wait", {"id": gen_id})
                done = (await browser.get(f"/gallery/{gen_id}")).text
    assert 'id="pending"' in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert ">PENDING<" in page
    assert '<meta http-equiv="refresh"' in listing
    assert 'id="pending"' not in done
    assert f'src="/images/{gen_id}"' in done
    assert 'http-equiv="refresh"' not in done
