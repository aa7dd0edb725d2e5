"""Submitted Pixazo queue jobs survive their instance: never reaped INTERRUPTED, claimed by exactly one
live instance once their owner is gone, left claimable by a clean stop (both engines, real databases)."""

from __future__ import annotations

import asyncio

from app.storage.database import RecordStore
from tests.conftest import store_for


async def job(store: RecordStore, request_id: str, prompt: str = "a queued flux") -> int:
    row = await store.insert_pending(prompt, {})
    await store.set_request_id(row.id, request_id)
    return row.id


async def status_of(store: RecordStore, gen_id: int) -> str:
    found = await store.get(gen_id)
    assert found is not None
    return found.status


async def test_a_dead_owners_job_is_claimed_once_and_its_plain_calls_are_reaped(database_url: str) -> None:
    crashed = await store_for(database_url)  # never renews a lease: as if it died right away
    submitted = await job(crashed, "job-a")
    plain = (await crashed.insert_pending("a plain call in flight", {})).id
    done = await job(crashed, "job-done")
    await crashed.finish(done, "SUCCESS", image_url="https://x.r2.dev/a.png")
    await crashed.close()

    first, second = await store_for(database_url), await store_for(database_url)
    try:
        for store in (first, second):
            await store.renew_lease(30)
        assert await first.reap_lapsed([]) == 1  # the plain call only: the paid job is still running
        assert (await status_of(first, plain), await status_of(first, submitted)) == ("INTERRUPTED", "PENDING")

        claims = await asyncio.gather(first.claim_jobs([]), second.claim_jobs([]))
        claimed = [g for found in claims for g in found]
        assert [(g.id, g.request_id, g.status) for g in claimed] == [(submitted, "job-a", "PENDING")]
        # Claimed by a live instance: nobody takes it again, and the reaper still leaves it alone.
        assert await first.claim_jobs([]) == []
        assert await second.claim_jobs([]) == []
        assert await second.reap_lapsed([]) == 0
        assert await status_of(second, submitted) == "PENDING"
        assert await status_of(second, done) == "SUCCESS"
    finally:
        await first.close()
        await second.close()


async def test_a_live_owners_jobs_are_not_claimed_until_it_is_known_dead(database_url: str) -> None:
    owner, other = await store_for(database_url), await store_for(database_url)
    try:
        for store in (owner, other):
            await store.renew_lease(30)
        mine = await job(owner, "job-live")
        assert await other.claim_jobs([]) == []
        assert await owner.claim_jobs([]) == []  # its own jobs are already its own
        assert await status_of(other, mine) == "PENDING"
        # Same machine, its pid gone: no need to wait for the lease.
        assert [g.id for g in await other.claim_jobs([owner.owner.id])] == [mine]  # type: ignore[attr-defined]
    finally:
        await owner.close()
        await other.close()


async def test_a_clean_stop_leaves_jobs_pending_and_claimable_at_once(database_url: str) -> None:
    stopping, survivor = await store_for(database_url), await store_for(database_url)
    try:
        for store in (stopping, survivor):
            await store.renew_lease(30)
        submitted = await job(stopping, "job-r")
        plain = (await stopping.insert_pending("a plain call", {})).id
        assert await stopping.release() == 1  # only the plain call ends INTERRUPTED
        assert (await status_of(survivor, plain), await status_of(survivor, submitted)) == ("INTERRUPTED", "PENDING")
        assert await survivor.reap_lapsed([]) == 0
        assert [g.id for g in await survivor.claim_jobs([])] == [submitted]
    finally:
        await stopping.close()
        await survivor.close()


async def test_several_replicas_claiming_together_split_the_jobs_without_overlap(database_url: str) -> None:
    crashed = await store_for(database_url)
    ids = [await job(crashed, f"job-{i}") for i in range(30)]
    await crashed.close()
    replicas = [await store_for(database_url) for _ in range(3)]
    try:
        for store in replicas:
            await store.renew_lease(30)
        rounds = await asyncio.gather(*(replicas[i % 3].claim_jobs([]) for i in range(9)))
        claimed = [g.id for found in rounds for g in found]
        assert sorted(claimed) == ids  # every job once, none twice
    finally:
        for store in replicas:
            await store.close()
