"""Resuming orphaned queue jobs (app.core.jobs): a starting instance claims the PENDING rows with a request
id whose owner is gone and follows each job to its end: FAILED, ERROR, unknown to Pixazo, or past
PIXAZO_JOB_RESUME_S (polling or not); at most PIXAZO_RESUME_CONCURRENCY at once; and a stop leaves them
PENDING. (The SIGKILL and replica cases, with real processes, are in test_queue_restart/_replicas.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from app.core.state import open_state
from app.pixazo.gateway import CATALOGUE, KEY_HEADER, STATUS_PATH
from app.pixazo.simulator import Fault, JobFault, Simulator
from app.settings import Settings
from app.storage.records import Generation
from app.storage.rows import CallMeta
from tests.conftest import TEST_KEY, make_settings, rows, store_for, without_xmp


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key=TEST_KEY, queued_models=("flux-schnell",)) as s:
        yield s


def settings_for(tmp_path: Path, sim: Simulator, **overrides: object) -> Settings:
    return make_settings(tmp_path, sim.url, poll_base_s=0.05, poll_cap_s=0.2, inline_image="none", **overrides)


async def submit(sim: Simulator) -> str:
    """A job submitted at Pixazo (as the dead instance did before it died)."""
    async with aiohttp.ClientSession() as http, http.post(
            sim.url + CATALOGUE["flux-schnell"].path, json={"prompt": "an orphan"},
            headers={KEY_HEADER: TEST_KEY}) as resp:
        assert resp.status == 202
        return str((await resp.json())["request_id"])


async def orphan(settings: Settings, request_id: str, prompt: str = "an orphan") -> int:
    """A row written by an instance that never renewed a lease: gone, as far as anyone can tell."""
    crashed = await store_for(f"sqlite:///{settings.db_path}")
    try:
        row = await crashed.insert_pending(prompt, {}, meta=CallMeta(model="flux-schnell", cost_usd=0.05))
        await crashed.set_request_id(row.id, request_id)
        return row.id
    finally:
        await crashed.close()


def polls(sim: Simulator, request_id: str) -> int:
    path = STATUS_PATH.format(request_id=request_id)
    return sum(1 for c in sim.stats.calls if c["path"] == path)


async def finished(settings: Settings, gen_id: int, within_s: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    while (row := rows(settings.db_path, f"id = {gen_id}")[0])["status"] == "PENDING":
        assert time.monotonic() < deadline, f"generation {gen_id} still PENDING"
        await asyncio.sleep(0.02)
    return row


@pytest.mark.parametrize(("state", "cost"), [("FAILED", 0.05), ("ERROR", 0.0)])
async def test_a_resumed_job_that_fails_ends_its_row_with_the_jobs_state(tmp_path: Path, sim: Simulator,
                                                                         state: str, cost: float) -> None:
    settings = settings_for(tmp_path, sim)
    sim.push(JobFault(state=state, error="no luck", polls=1))
    request_id = await submit(sim)
    gen_id = await orphan(settings, request_id)
    async with open_state(settings):
        row = await finished(settings, gen_id)
    assert (row["status"], row["request_id"], row["upstream_error"]) == (f"JOB_{state}", request_id, "no luck")
    assert row["cost_usd"] == cost  # ERROR is Pixazo's system error: not charged; FAILED keeps the price
    assert "charged" in str(row["error"])


async def test_a_resumed_job_pixazo_does_not_know_ends_job_unknown(tmp_path: Path, sim: Simulator) -> None:
    settings = settings_for(tmp_path, sim)
    gen_id = await orphan(settings, "a-job-pixazo-forgot")
    async with open_state(settings):
        row = await finished(settings, gen_id)
    assert row["status"] == "JOB_UNKNOWN"
    assert polls(sim, "a-job-pixazo-forgot") == 1


async def test_a_resumed_job_is_followed_only_within_its_window(tmp_path: Path, sim: Simulator) -> None:
    settings = settings_for(tmp_path, sim, job_resume_s=1.5)
    sim.push(JobFault(state="PROCESSING"))  # never ends
    running = await submit(sim)
    running_id = await orphan(settings, running, "still running")
    async with open_state(settings):
        row = await finished(settings, running_id)
    assert (row["status"], row["request_id"]) == ("TIMEOUT", running)
    assert "still PROCESSING after 1.5 seconds" in str(row["error"])
    assert "may still finish" in str(row["error"])


async def test_a_resumed_job_whose_status_route_keeps_failing_ends_timeout(tmp_path: Path,
                                                                            sim: Simulator) -> None:
    settings = settings_for(tmp_path, sim, job_resume_s=1.0)
    request_id = await submit(sim)
    sim.push(*[Fault(kind="http", status=503, route="status") for _ in range(100)])
    gen_id = await orphan(settings, request_id)
    async with open_state(settings):
        row = await finished(settings, gen_id)
    assert row["status"] == "TIMEOUT"
    assert "not answering on its status route" in str(row["error"])
    assert polls(sim, request_id) >= 2  # tried again, with backoff, until the window closed


async def test_resumed_jobs_are_polled_a_bounded_number_at_once_and_left_pending_on_stop(
        tmp_path: Path, sim: Simulator) -> None:
    settings = settings_for(tmp_path, sim, resume_concurrency=1)
    sim.push(JobFault(state="PROCESSING"), JobFault(state="PROCESSING"))
    first, second = await submit(sim), await submit(sim)
    ids = [await orphan(settings, first), await orphan(settings, second)]
    async with open_state(settings) as state:
        deadline = time.monotonic() + 20
        while polls(sim, first) < 5:
            assert time.monotonic() < deadline, "the first job was not followed"
            await asyncio.sleep(0.02)
        assert state.jobs is not None
        assert state.jobs.active == 2  # both claimed: one followed, one waiting for the slot
        assert polls(sim, second) == 0
        polled = polls(sim, first)
    # Stopped: no job is followed any more, and both rows are PENDING with their ids and no owner.
    await asyncio.sleep(0.5)
    assert polls(sim, first) == polled
    found = rows(settings.db_path)
    assert [(r["id"], r["status"], r["request_id"], r["owner"]) for r in found] == [
        (ids[0], "PENDING", first, None), (ids[1], "PENDING", second, None)]


async def test_a_live_instances_jobs_are_not_taken(tmp_path: Path, sim: Simulator) -> None:
    settings = settings_for(tmp_path, sim)
    sim.push(JobFault(state="PROCESSING"))
    request_id = await submit(sim)
    async with open_state(settings) as owner_state:
        row = await owner_state.store.insert_pending("mine", {})
        await owner_state.store.set_request_id(row.id, request_id)
        async with open_state(settings):  # a second instance on the same database
            await asyncio.sleep(0.5)
            assert polls(sim, request_id) == 0
            got = await owner_state.store.get(row.id)
            assert isinstance(got, Generation)
            assert got.status == "PENDING"


async def test_a_resumed_upscale_job_keeps_its_upscaled_image(tmp_path: Path, sim: Simulator) -> None:
    """A real queue model (the upscaler), resumed from its row alone: Pixazo's result is kept, same row."""
    settings = settings_for(tmp_path, sim)
    source = sim.url + "/images/1-512x512-0.png"
    upscaler = CATALOGUE["crystal-upscaler"]
    async with aiohttp.ClientSession() as http, http.post(
            sim.url + upscaler.path, json=upscaler.body({"image": source, "scale": 2}),
            headers={KEY_HEADER: TEST_KEY}) as resp:
        assert resp.status == 202
        request_id = str((await resp.json())["request_id"])
    crashed = await store_for(f"sqlite:///{settings.db_path}")
    try:
        row = await crashed.insert_pending("an upscale", {"scale": 2}, meta=CallMeta(
            model="crystal-upscaler", operation="upscale", cost_usd=0.07))
        await crashed.set_request_id(row.id, request_id)
    finally:
        await crashed.close()
    async with open_state(settings):
        done = await finished(settings, row.id)
    image_url = sim.jobs[request_id].image_url or ""
    assert "1024x1024" in image_url  # the simulator's 2x upscale of the 512 x 512 input
    assert (done["status"], done["model"], done["operation"], done["cost_usd"]) == (
        "SUCCESS", "crystal-upscaler", "upscale", 0.07)
    assert without_xmp((settings.image_dir / str(done["image_path"])).read_bytes()) == sim.image_bytes(image_url)
