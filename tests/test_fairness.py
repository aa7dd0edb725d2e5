"""Slots to Pixazo are shared fairly: one caller's burst cannot hold the whole cap against the others."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2
import pytest
from pydantic import SecretStr

from app.core.resilience import ConcurrencyCap, QueueTimeoutError
from app.pixazo.simulator import Fault, Simulator
from tests.conftest import LiveServer, http_client, live_server, make_settings

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"


async def test_a_freed_slot_goes_to_the_caller_with_the_fewest_in_flight() -> None:
    cap = ConcurrencyCap(2, queue_timeout_s=30)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in ("a1", "a2", "a3", "a4", "b1", "b2", "c1")}

    async def call(caller: str, name: str) -> None:
        async with cap.slot(caller):
            order.append(name)
            await releases[name].wait()

    async with asyncio.TaskGroup() as tg:
        for name in ("a1", "a2", "a3", "a4"):
            tg.create_task(call("alice", name))
        await asyncio.sleep(0)
        tg.create_task(call("bob", "b1"))
        tg.create_task(call("bob", "b2"))
        tg.create_task(call("carol", "c1"))
        await asyncio.sleep(0)
        assert (order, cap.in_flight, cap.waiting) == (["a1", "a2"], 2, 5)
        for done in ("a1", "a2", "b1", "c1", "a3", "b2", "a4"):
            releases[done].set()
            for _ in range(5):
                await asyncio.sleep(0)
    # bob then carol (none in flight) before alice's third; then one each in turn
    assert order == ["a1", "a2", "b1", "c1", "a3", "b2", "a4"]
    assert (cap.in_flight, cap.waiting) == (0, 0)


async def test_waiters_that_time_out_or_are_cancelled_leave_the_queue() -> None:
    cap = ConcurrencyCap(1, queue_timeout_s=0.05)
    hold = asyncio.Event()

    async def holder() -> None:
        async with cap.slot("alice"):
            await hold.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(QueueTimeoutError):
        async with cap.slot("bob"):
            pass
    cancelled = asyncio.create_task(cap.slot("carol").__aenter__())
    await asyncio.sleep(0)
    assert cap.waiting == 1
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert (cap.in_flight, cap.waiting) == (1, 0)
    hold.set()
    await task
    assert (cap.in_flight, cap.waiting) == (0, 0)
    async with cap.slot("bob") as waited:  # the cap still works
        assert waited < 1


async def queued(live: LiveServer, count: int) -> None:
    """Wait (bounded) until the server reports `count` calls waiting for a slot."""
    deadline = time.monotonic() + 20
    # /healthz's details are for operators: under `team`, any caller (alice) is one.
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}) as http:
        while (await http.get(live.url + "/healthz")).json()["queued"] != count:
            assert time.monotonic() < deadline, "the calls never queued"
            await asyncio.sleep(0.02)


async def test_one_callers_burst_does_not_starve_another(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_concurrency=4, inline_image="none", max_background_per_caller=64,
                             auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"))
    # The first four requests (alice's) hold their slots until bob is queued; one frees before the others.
    sim.push(Fault(kind="slow", delay=3.0), *(Fault(kind="slow", delay=5.0) for _ in range(3)))
    async with live_server(settings) as live, AsyncExitStack() as stack:
        alice = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {ALICE}"}))
        bob = await stack.enter_async_context(http_client(live, headers={"Authorization": f"Bearer {BOB}"}))
        burst = [asyncio.create_task(alice.call_tool("pix_generate", {"prompt": f"alice {i}"}))
                 for i in range(30)]
        await queued(live, 26)
        bobs = asyncio.create_task(bob.call_tool("pix_generate", {"prompt": "bob"}))
        await queued(live, 27)
        results = await asyncio.gather(*burst, bobs)
    assert not [r for r in results if r.is_error]
    prompts = [body["prompt"] for body in sim.stats.bodies]
    assert len(prompts) == 31
    assert all(p.startswith("alice") for p in prompts[:4])
    # The first slot alice's burst gave back went to bob, not to her 26 waiting calls.
    assert prompts[4] == "bob"
