"""A submitted queue job survives its server (issue 15): a real `pixazo-mcp serve` process SIGKILLed while
polling, or stopped with SIGTERM, leaves the row PENDING with its request id; the next process on the same
database resumes polling and the row ends SUCCESS, same id, image kept. The simulator runs here; each job
completes only after its server is gone."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.pixazo.gateway import STATUS_PATH
from app.pixazo.simulator import JobFault, Simulator
from app.storage.database import RecordStore
from app.storage.records import Generation
from tests.conftest import TEST_KEY, rows, store_for, without_xmp
from tests.test_instances import server_env, serving

pytestmark = pytest.mark.timeout(240)

QUEUE_ENV = {"PIXAZO_POLL_BASE_S": "0.05", "PIXAZO_POLL_CAP_S": "0.2", "PIXAZO_SHUTDOWN_GRACE_S": "1"}


async def queue_call(url: str, prompt: str) -> Any:
    """A remote agent asking FLUX for an image; the result, or the error when its server dies."""
    try:
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http,
            Client(streamable_http_client(url + "/mcp", http_client=http, terminate_on_close=False)) as client,
        ):
            return await client.call_tool("pix_generate", {"prompt": prompt, "model": "flux-schnell"})
    except BaseException as exc:  # noqa: BLE001 - a killed server breaks the stream in many ways
        return exc


def polls(sim: Simulator, request_id: str) -> int:
    path = STATUS_PATH.format(request_id=request_id)
    return sum(1 for c in sim.stats.calls if c["path"] == path)


async def polled_job(store: RecordStore, sim: Simulator, prompt: str) -> Generation:
    """The row of the call with this prompt, once its job id is recorded and the job polled."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [g for g in await store.page(limit=20) if g.prompt == prompt]
        if found and found[0].request_id is not None and polls(sim, found[0].request_id) >= 2:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no polled job for {prompt!r}")


async def row(store: RecordStore, gen_id: int) -> Generation:
    found = await store.get(gen_id)
    assert found is not None
    return found


async def until_finished(store: RecordStore, gen_id: int, within_s: float) -> Generation:
    deadline = time.monotonic() + within_s
    while (found := await row(store, gen_id)).status == "PENDING":
        assert time.monotonic() < deadline, f"generation {gen_id} still PENDING after {within_s} s"
        await asyncio.sleep(0.05)
    return found


async def test_a_job_outlives_a_sigkilled_server_and_a_sigtermed_one_and_ends_success(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'pixazo.db'}"
    async with Simulator(api_key=TEST_KEY, queued_models=("flux-schnell",)) as sim:
        env = server_env(tmp_path, sim, database_url, **QUEUE_ENV)
        watcher = await store_for(database_url)
        try:
            # 1. SIGKILL while polling: nothing runs to clean up; the job is still running at Pixazo.
            sim.push(JobFault(state="PROCESSING"))
            async with serving(tmp_path, env, "killed") as (killed, port):
                call = asyncio.create_task(queue_call(f"http://127.0.0.1:{port}", "killed mid-poll"))
                job = await polled_job(watcher, sim, "killed mid-poll")
                killed.send_signal(signal.SIGKILL)
                await asyncio.to_thread(killed.wait, 10)
            assert isinstance(await call, BaseException)  # the caller lost its connection
            assert (await row(watcher, job.id)).status == "PENDING"
            sim.finish(job.request_id or "")  # the job completes only now, with no server polling it
            before = polls(sim, job.request_id or "")

            # 2. A new process on the same database resumes the job at start-up: SUCCESS, same row.
            sim.push(JobFault(state="PROCESSING"))
            async with serving(tmp_path, env, "restarted") as (restarted, port):
                done = await until_finished(watcher, job.id, 60)
                assert (done.status, done.request_id) == ("SUCCESS", job.request_id)
                assert polls(sim, job.request_id or "") > before  # polled by the new process
                image_url = sim.jobs[job.request_id or ""].image_url or ""
                assert done.image_url == image_url
                assert done.image_path is not None
                kept = (tmp_path / "images" / done.image_path).read_bytes()
                assert without_xmp(kept) == sim.image_bytes(image_url)
                assert len(kept) > 1_000_000
                async with httpx2.AsyncClient() as http:
                    served = await http.get(f"http://127.0.0.1:{port}/images/{job.id}")
                assert (served.status_code, served.content) == (200, kept)

                # 3. SIGTERM while polling: a clean stop leaves the job's row PENDING (not INTERRUPTED)
                # with its request id and no owner, for the next instance.
                call = asyncio.create_task(queue_call(f"http://127.0.0.1:{port}", "stopped mid-poll"))
                second = await polled_job(watcher, sim, "stopped mid-poll")
                restarted.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(restarted.wait, 30) == 128 + signal.SIGTERM
            await call
            (left,) = rows(tmp_path / "pixazo.db", f"id = {second.id}")
            assert (left["status"], left["request_id"], left["owner"]) == ("PENDING", second.request_id, None)
            sim.finish(second.request_id or "")

            async with serving(tmp_path, env, "next"):
                done = await until_finished(watcher, second.id, 60)
            assert (done.status, done.request_id) == ("SUCCESS", second.request_id)
            assert done.image_path is not None
            assert without_xmp((tmp_path / "images" / done.image_path).read_bytes()) == sim.image_bytes(
                sim.jobs[second.request_id or ""].image_url or "")
        finally:
            await watcher.close()
