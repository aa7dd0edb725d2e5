"""Several replicas on one PostgreSQL and one S3-compatible store (issue 15, "Done when"): a queue job
submitted by a replica that is SIGKILLed while polling is claimed by one survivor, polled to its end and
finished SUCCESS on the same row, its image readable through every surviving replica."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import uuid
from pathlib import Path

import httpx2
import pytest

from app.pixazo.simulator import JobFault, Simulator
from tests.conftest import TEST_KEY, store_for, without_xmp
from tests.services import SeaweedS3
from tests.test_instances import server_env
from tests.test_queue_restart import QUEUE_ENV, polled_job, polls, queue_call, until_finished
from tests.test_replicas import db_rows, instance_of, replicas

pytestmark = pytest.mark.timeout(300)

LEASE_S = 3.0


async def test_a_job_of_a_killed_replica_is_finished_by_a_survivor(tmp_path: Path, postgres_url: str,
                                                                   seaweed: SeaweedS3) -> None:
    prefix = f"queue-replicas-{uuid.uuid4().hex[:12]}"
    async with Simulator(api_key=TEST_KEY, queued_models=("flux-schnell",)) as sim:
        env = server_env(tmp_path, sim, postgres_url, **seaweed.env(prefix), PIXAZO_LEASE_S=str(LEASE_S),
                         **QUEUE_ENV)
        watcher = await store_for(postgres_url)
        try:
            async with replicas(tmp_path, env, 3) as servers:
                (victim, victim_port), *survivors = servers
                victim_id = await asyncio.to_thread(instance_of, postgres_url, victim.pid)
                survivor_ids = {await asyncio.to_thread(instance_of, postgres_url, p.pid) for p, _ in survivors}

                sim.push(JobFault(state="PROCESSING"))  # runs until the victim is gone
                call = asyncio.create_task(queue_call(f"http://127.0.0.1:{victim_port}", "submitted, then orphaned"))
                job = await polled_job(watcher, sim, "submitted, then orphaned")
                (before,) = await asyncio.to_thread(db_rows, postgres_url, "id = %s", (job.id,))
                assert (before["status"], before["owner"]) == ("PENDING", victim_id)

                victim.send_signal(signal.SIGKILL)
                await asyncio.to_thread(victim.wait, 10)
                assert isinstance(await call, BaseException)
                sim.finish(job.request_id or "")
                polled_before = polls(sim, job.request_id or "")

                # Within the lease, one renewal, and slack for a loaded machine.
                done = await until_finished(watcher, job.id, 3 * LEASE_S + 20)
                assert (done.status, done.request_id) == ("SUCCESS", job.request_id)
                assert polls(sim, job.request_id or "") > polled_before
                (after,) = await asyncio.to_thread(db_rows, postgres_url, "id = %s", (job.id,))
                assert after["owner"] in survivor_ids  # claimed by a survivor, not re-submitted
                assert [c["method"] for c in sim.stats.calls].count("POST") == 1
                # The image is in the shared bucket and reads back, byte for byte, through every survivor.
                image_url = sim.jobs[job.request_id or ""].image_url or ""
                assert len(seaweed.keys(prefix + "/")) == 1
                async with httpx2.AsyncClient(timeout=30) as http:
                    for _, port in survivors:
                        got = await http.get(f"http://127.0.0.1:{port}/images/{job.id}")
                        assert got.status_code == 200
                        assert hashlib.sha256(got.content).hexdigest() == after["image_sha256"]
                        assert without_xmp(got.content) == sim.image_bytes(image_url)
        finally:
            await watcher.close()
