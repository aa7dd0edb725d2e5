"""Queue jobs end to end (issue 15): submitted, the request id recorded at once, polled with backoff to
COMPLETED (image kept), FAILED, ERROR, an unknown job or the deadline; transient poll failures retried;
progress carrying the queue state; a cancelled call polls no more. Pixazo is the simulator, with FLUX
answering a job to poll (as some 2026 clients see it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from app.pixazo.gateway import CATALOGUE, KEY_HEADER, STATUS_PATH
from app.pixazo.simulator import Fault, JobFault, Simulator
from app.settings import Settings
from tests.conftest import TEST_KEY, http_client, in_memory_client, live_server, make_settings, rows, without_xmp

FLUX = CATALOGUE["flux-schnell"].path
FLUX_BODY = {"prompt": "a queued fox", "width": 1024, "height": 1024, "num_steps": 4, "seed": 42}
ARGS = {"prompt": "a queued fox", "model": "flux-schnell"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key=TEST_KEY, queued_models=("flux-schnell",), queue_polls_before_done=2) as s:
        yield s


@pytest.fixture
def settings(tmp_path: Path, sim: Simulator) -> Settings:
    return make_settings(tmp_path, sim.url, poll_base_s=0.05, poll_cap_s=0.2, inline_image="none")


def polls_of(sim: Simulator, request_id: str) -> list[dict[str, Any]]:
    path = STATUS_PATH.format(request_id=request_id)
    return [c for c in sim.stats.calls if c["path"] == path]


async def test_a_queue_job_is_polled_to_completion_and_its_image_kept(settings: Settings, sim: Simulator) -> None:
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
    assert not result.is_error, result.content[0].text
    (request_id,) = sim.jobs
    # Exactly: the submit (path and body), then polls of the generic status route until it ended.
    # The job reports QUEUED, PROCESSING (queue_polls_before_done=2), then COMPLETED.
    assert list(sim.stats.calls) == [{"method": "POST", "path": FLUX, "body": FLUX_BODY}] + [
        {"method": "GET", "path": STATUS_PATH.format(request_id=request_id), "body": None}] * 3
    (row,) = rows(settings.db_path)
    assert (row["status"], row["model"], row["operation"], row["request_id"]) == (
        "SUCCESS", "flux-schnell", "generate", request_id)
    image_url = sim.jobs[request_id].image_url
    assert image_url is not None
    assert row["image_url"] == image_url == result.structured_content["image_url"]
    stored = (settings.image_dir / row["image_path"]).read_bytes()
    assert without_xmp(stored) == sim.image_bytes(image_url)
    assert len(stored) > 1_000_000  # a real-size 1024 x 1024 PNG


async def test_the_request_id_is_on_the_row_before_the_first_poll(settings: Settings, sim: Simulator) -> None:
    sim.push(JobFault(state="PROCESSING"))  # never ends by itself
    async with in_memory_client(settings) as client:
        call = asyncio.create_task(client.call_tool("pix_generate", ARGS))
        deadline = time.monotonic() + 20
        while not sim.jobs:
            assert time.monotonic() < deadline, "the job was never submitted"
            assert not call.done(), call.result()
            await asyncio.sleep(0.005)
        (request_id,) = sim.jobs
        while (found := rows(settings.db_path)[0])["request_id"] is None:
            assert time.monotonic() < deadline, "the request id was never recorded"
            await asyncio.sleep(0.005)
        # Recorded at once: at most the first poll is on its way (its wait is 50 ms).
        assert len(polls_of(sim, request_id)) <= 1
        assert (found["status"], found["request_id"]) == ("PENDING", request_id)
        sim.finish(request_id)
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error
    assert rows(settings.db_path)[0]["status"] == "SUCCESS"


@pytest.mark.parametrize(("state", "charged", "cost"), [("FAILED", "may have been charged", 0.01),
                                                       ("ERROR", "not charged", 0.0)])
async def test_a_queue_job_that_fails_ends_its_row_with_the_jobs_state(tmp_path: Path, sim: Simulator,
                                                                       state: str, charged: str, cost: float) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"flux-schnell": 0.01}')
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.05, poll_cap_s=0.2, prices_file=prices)
    sim.push(JobFault(state=state, error="the model refused the prompt", polls=1))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
    assert result.is_error
    text = result.content[0].text
    assert f"failed (JOB_{state})" in text
    assert charged in text
    (request_id,) = sim.jobs
    assert len(polls_of(sim, request_id)) == 2  # QUEUED, then the end: no poll after it
    (row,) = rows(settings.db_path)
    assert (row["status"], row["request_id"], row["image_path"]) == (f"JOB_{state}", request_id, None)
    assert row["upstream_error"] == "the model refused the prompt"  # Pixazo's words, for operators
    assert row["cost_usd"] == cost  # ERROR is Pixazo's system error: not charged
    assert "refused the prompt" not in text  # never to the caller


async def test_transient_poll_failures_are_polled_again_after_retry_after(settings: Settings,
                                                                          sim: Simulator) -> None:
    sim.push(Fault(kind="http", status=503, headers={"Retry-After": "1"}, route="status"),
             Fault(kind="reset", route="status"),
             Fault(kind="http", status=429, route="status"),
             Fault(kind="http", status=500, body="Error processing request", route="status"))
    started = time.monotonic()
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
    took = time.monotonic() - started
    assert not result.is_error, result.content[0].text
    (request_id,) = sim.jobs
    assert len(polls_of(sim, request_id)) == 4 + 3  # the four failures, then the job's three polls
    assert rows(settings.db_path)[0]["status"] == "SUCCESS"
    # The 503's Retry-After (1 s) was honoured, where the backoff alone waits 50 ms, then 75 ms, ...
    assert took >= 1.0


async def test_a_job_pixazo_does_not_know_ends_the_call_clearly(settings: Settings, sim: Simulator) -> None:
    sim.push(Fault(kind="http", status=404, body='{"error": "Request not found"}', route="status"))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
    assert result.is_error
    assert "no longer knows this queue job" in result.content[0].text
    (request_id,) = sim.jobs
    assert len(polls_of(sim, request_id)) == 1
    (row,) = rows(settings.db_path)
    assert (row["status"], row["upstream_error"]) == ("JOB_UNKNOWN", "Request not found")


async def test_a_refused_poll_ends_the_call_as_that_http_failure(settings: Settings, sim: Simulator) -> None:
    sim.push(Fault(kind="http", status=401, body='{"message": "Access denied"}', route="status"))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
    assert result.is_error
    assert "PIXAZO_API_KEY" in result.content[0].text
    (request_id,) = sim.jobs
    assert len(polls_of(sim, request_id)) == 1
    assert rows(settings.db_path)[0]["status"] == "HTTP_401"


async def test_the_deadline_ends_a_running_job_timeout_saying_it_may_still_finish(tmp_path: Path,
                                                                                 sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.05, poll_cap_s=0.2, deadline_s=1.5,
                             breaker_threshold=1)
    sim.push(JobFault(state="PROCESSING"))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", ARGS)
        # A slow job is not a failing gateway: the circuit breaker (threshold 1) stays closed.
        assert not (await client.call_tool("pix_generate", {"prompt": "next"})).is_error
    assert result.is_error
    text = result.content[0].text
    assert "failed (TIMEOUT)" in text
    assert "still PROCESSING after 1.5 seconds" in text
    assert "may still finish" in text
    (request_id,) = sim.jobs
    row = rows(settings.db_path)[0]
    # The row keeps the job's id: the operator can find the job by the generation's id.
    assert (row["status"], row["request_id"]) == ("TIMEOUT", request_id)
    assert row["id"] == int(text.split("Generation ")[1].split(" ")[0])
    polled = len(polls_of(sim, request_id))
    await asyncio.sleep(0.5)
    assert len(polls_of(sim, request_id)) == polled  # given up: no poll after the call ended


async def test_progress_carries_the_queue_state(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.05, poll_cap_s=0.2, progress_interval_s=0.3,
                             inline_image="none")
    sim.push(JobFault(state="COMPLETED", polls=3, seconds=1.0))
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with live_server(settings) as live, http_client(live) as client:
        result = await client.call_tool("pix_generate", ARGS, progress_callback=on_progress)
    assert not result.is_error
    (request_id,) = sim.jobs
    gen = f"Generation {result.structured_content['id']}: "  # every message names the generation
    job = f"{gen}Pixazo job {request_id}: "
    assert seen[0].startswith(gen)
    assert next(m for m in seen if "Pixazo job" in m) == job + "QUEUED"
    processing = [m for m in seen if m.startswith(job + "PROCESSING")]
    # At the change, then repeated by the heartbeat (every 0.3 s) while the job runs about a second.
    assert len(processing) >= 2
    assert any(m.startswith(job + "PROCESSING (") for m in processing)
    assert seen[-1] == gen + "finished SUCCESS"
    assert not [m for m in seen if "waiting for the image" in m]  # the job's state instead


async def test_a_sync_model_keeps_the_heartbeat(tmp_path: Path, sim: Simulator) -> None:
    sim.latency = 0.8
    settings = make_settings(tmp_path, sim.url, progress_interval_s=0.2, inline_image="none")
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with live_server(settings) as live, http_client(live) as client:
        result = await client.call_tool("pix_generate", {"prompt": "sync"}, progress_callback=on_progress)
    assert not result.is_error
    gen = f"Generation {result.structured_content['id']}: "
    assert [m for m in seen if m.startswith(gen + "sent to Pixazo, waiting for the image (")]
    assert not [m for m in seen if "Pixazo job" in m]


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_a_cancelled_call_stops_polling_at_once(settings: Settings, sim: Simulator, mode: str) -> None:
    sim.push(JobFault(state="PROCESSING"))  # runs until the test ends it
    async with live_server(settings) as live, http_client(live, mode=mode) as client:
        await client.list_tools()
        request_id = ""
        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as tg:
                async def call() -> None:
                    await client.call_tool("pix_generate", ARGS)

                tg.start_soon(call)
                while not sim.jobs or len(polls_of(sim, next(iter(sim.jobs)))) < 3:
                    await anyio.sleep(0.01)
                request_id = next(iter(sim.jobs))
                tg.cancel_scope.cancel()  # the agent gives up on the call
        assert not scope.cancelled_caught, "the job was never polled"
        deadline = time.monotonic() + 20
        while rows(settings.db_path)[0]["status"] == "PENDING":
            assert time.monotonic() < deadline, "the cancelled call's row stayed PENDING"
            await asyncio.sleep(0.02)
        polled = len(polls_of(sim, request_id))
        # Ten poll intervals (the cap is 0.2 s): a poller still running would have polled again.
        await asyncio.sleep(2.0)
        assert len(polls_of(sim, request_id)) == polled
        # the server keeps serving after the cancellation
        assert (await client.call_tool("list_generations", {})).structured_content["generations"]
    (row,) = rows(settings.db_path)
    assert (row["status"], row["request_id"]) == ("CANCELLED", request_id)


async def test_the_simulators_control_route_makes_a_sync_model_answer_a_job(tmp_path: Path) -> None:
    """What servers in other processes rely on (the restart tests configure the simulator in-process)."""
    async with Simulator(api_key=TEST_KEY) as sim, aiohttp.ClientSession() as http:
        headers = {KEY_HEADER: TEST_KEY}
        async with http.post(sim.url + FLUX, json={"prompt": "p"}, headers=headers) as resp:
            assert (resp.status, list(await resp.json())) == (200, ["output"])
        async with http.post(sim.url + "/_sim/faults", json={"queued_models": ["flux-schnell"]}) as resp:
            assert resp.status == 200
        async with http.post(sim.url + FLUX, json={"prompt": "p"}, headers=headers) as resp:
            answer = await resp.json()
            assert (resp.status, answer["status"]) == (202, "QUEUED")
        async with http.get(sim.url + STATUS_PATH.format(request_id=answer["request_id"]), headers=headers) as resp:
            assert (await resp.json())["status"] == "QUEUED"
