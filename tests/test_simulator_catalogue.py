"""The simulator speaks every catalogue endpoint in its documented shape (issue 15): sync answers, the
queue and its status route, body checks with the live plain-text 500, job faults, input fetching."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from app.errors import UpstreamHTTPError
from app.pixazo.client import PixazoClient
from app.pixazo.gateway import (
    CATALOGUE,
    COMPLETED,
    ERROR,
    FAILED,
    KEY_HEADER,
    PROCESSING,
    QUEUED,
    STATUS_PATH,
    Endpoint,
)
from app.pixazo.simulator import MAX_SIDE, Fault, JobFault, Simulator
from tests.conftest import TEST_KEY, free_port

KEY = {KEY_HEADER: TEST_KEY}
SDXL, LIGHTNING, FLUX = CATALOGUE["sdxl"], CATALOGUE["sdxl-lightning"], CATALOGUE["flux-schnell"]
UPSCALER, RMBG, INPAINT, OUTPAINT = (CATALOGUE["crystal-upscaler"], CATALOGUE["bria-rmbg-2.0"],
                                     CATALOGUE["sd-inpainting"], CATALOGUE["image-outpaint"])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def client(http: aiohttp.ClientSession, sim: Simulator) -> PixazoClient:
    return PixazoClient(http, sim.url, SecretStr(TEST_KEY), aiohttp.ClientTimeout(total=30))


def wire(endpoint: Endpoint, **values: Any) -> dict[str, Any]:
    """A body in the endpoint's own wire names (from the gateway, like the client sends)."""
    return endpoint.body(values)


def small_input(sim: Simulator, width: int = 256, height: int = 192) -> str:
    """An input image on the simulator's own image route: a real PNG, cheap to render."""
    return f"{sim.url}/images/900-{width}x{height}-0.png"


async def post(http: aiohttp.ClientSession, sim: Simulator, endpoint: Endpoint,
               body: dict[str, Any]) -> tuple[int, str, str]:
    async with http.post(sim.url + endpoint.path, json=body, headers=KEY) as resp:
        return resp.status, resp.content_type, await resp.text()


async def fetch_png(http: aiohttp.ClientSession, url: str) -> Image.Image:
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        data = await resp.read()
    # Pillow's decompression-bomb cap is process-wide, and servers started by earlier tests set it
    # to their own pixel cap; results up to 2048 x 2048 are what is checked here.
    before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # a full decode: a broken PNG fails here
    finally:
        Image.MAX_IMAGE_PIXELS = before
    return img


async def poll(http: aiohttp.ClientSession, sim: Simulator, request_id: str) -> dict[str, Any]:
    async with http.get(sim.url + STATUS_PATH.format(request_id=request_id), headers=KEY) as resp:
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


# --- sync models ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "field"), [(SDXL, "imageUrl"), (LIGHTNING, "imageUrl"), (FLUX, "output")])
async def test_sync_models_answer_in_their_own_shape_with_an_image_of_the_asked_size(
        http: aiohttp.ClientSession, sim: Simulator, client: PixazoClient, endpoint: Endpoint, field: str) -> None:
    body = wire(endpoint, prompt="a fox", width=512, height=768, seed=3)
    status, _, text = await post(http, sim, endpoint, body)
    assert status == 200
    answer = json.loads(text)
    assert list(answer) == [field]
    img = await fetch_png(http, answer[field])
    assert img.size == (512, 768)
    # the client reads the same shape, and the simulator recorded the exact request (path and body)
    got = await client.submit(endpoint, body)
    assert got.image_url is not None
    assert got.request_id is None
    assert sim.stats.calls[-1] == {"method": "POST", "path": endpoint.path, "body": body}
    assert sim.stats.bodies[-1] == body


async def test_sync_models_take_the_catalogue_defaults_when_only_a_prompt_is_sent(
        http: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, text = await post(http, sim, FLUX, {"prompt": "p"})
    assert status == 200
    assert "-1024x1024-" in json.loads(text)["output"]


# --- the live quirk and the refusals --------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "body"), [
    (SDXL, {"prompt": "p", "guidance": 5}),  # seen live
    (LIGHTNING, {"prompt": "p", "guidance_scale": 5}),
    (LIGHTNING, {"prompt": "p", "negative_prompt": "blur"}),
    (FLUX, {"prompt": "p", "negative_prompt": "blur"}),
    (FLUX, {"prompt": "p", "guidance_scale": 5}),
    (UPSCALER, {"image": "http://127.0.0.1:9/x.png", "scale": 2}),
    (RMBG, {"image": "http://127.0.0.1:9/x.png"}),
    (INPAINT, {"prompt": "p", "imageUrl": "http://127.0.0.1:9/x.png", "maskUrl": "http://127.0.0.1:9/m.png",
               "guidance_scale": 5}),
])
async def test_a_field_the_model_does_not_take_gets_the_live_plain_text_500(
        http: aiohttp.ClientSession, sim: Simulator, client: PixazoClient, endpoint: Endpoint,
        body: dict[str, Any]) -> None:
    status, ctype, text = await post(http, sim, endpoint, body)
    assert (status, ctype, text) == (500, "text/plain", "Error processing request")
    with pytest.raises(UpstreamHTTPError) as caught:
        await client.submit(endpoint, body)
    assert caught.value.status == 500
    assert "Error processing request" in str(caught.value)
    assert not sim.jobs
    assert not sim.stats.fetches


@pytest.mark.parametrize(("endpoint", "body", "word"), [
    (SDXL, {"negative_prompt": "x"}, "prompt"),
    (SDXL, {"prompt": ""}, "prompt"),
    (FLUX, {"seed": 1}, "prompt"),
    (UPSCALER, {"scale_factor": 2}, "image"),
    (RMBG, {}, "image_url"),
    (OUTPAINT, {"zoom_out_percentage": 20}, "image_url"),
    (INPAINT, {"prompt": "p", "imageUrl": "http://127.0.0.1:9/x.png"}, "maskUrl"),
    (SDXL, {"prompt": "p", "width": 4000}, "width"),
    (SDXL, {"prompt": "p", "width": 1001}, "width"),  # not a multiple of 8
    (SDXL, {"prompt": "p", "num_steps": True}, "num_steps"),
    (LIGHTNING, {"prompt": "p", "guidance": 16}, "guidance"),
    (FLUX, {"prompt": "p", "num_steps": 9}, "num_steps"),
    (FLUX, {"prompt": "p", "width": 1536}, "width"),
    (UPSCALER, {"image": "http://127.0.0.1:9/x.png", "scale_factor": 3}, "scale_factor"),
    (OUTPAINT, {"image_url": "http://127.0.0.1:9/x.png", "zoom_out_percentage": 95}, "zoom_out_percentage"),
    (RMBG, {"image_url": "file:///etc/passwd"}, "image_url"),
])
async def test_missing_or_out_of_range_values_are_refused_with_400_json(
        http: aiohttp.ClientSession, sim: Simulator, endpoint: Endpoint, body: dict[str, Any], word: str) -> None:
    status, ctype, text = await post(http, sim, endpoint, body)
    assert (status, ctype) == (400, "application/json")
    assert word in json.loads(text)["error"]
    assert not sim.jobs
    assert not sim.stats.fetches


async def test_requests_without_the_key_are_refused_on_models_and_the_status_route(
        http: aiohttp.ClientSession, sim: Simulator) -> None:
    async with http.post(sim.url + RMBG.path, json={"image_url": small_input(sim)}) as resp:
        assert resp.status == 401
    async with http.get(sim.url + STATUS_PATH.format(request_id="anything")) as resp:
        assert resp.status == 401
        assert "subscription key" in (await resp.json())["message"]


# --- the queue -------------------------------------------------------------------------------------

async def test_a_queue_job_goes_queued_processing_completed_with_the_documented_body(
        http: aiohttp.ClientSession, sim: Simulator) -> None:
    source = small_input(sim, 256, 192)
    body = wire(UPSCALER, image=source, scale=4)
    async with http.post(sim.url + UPSCALER.path, json=body, headers=KEY) as resp:
        assert resp.status == 202
        submitted = await resp.json()
    assert set(submitted) == {"request_id", "status", "polling_url"}
    assert submitted["status"] == QUEUED
    rid = submitted["request_id"]
    assert submitted["polling_url"] == sim.url + STATUS_PATH.format(request_id=rid)
    # Pixazo fetched the input itself before accepting the job
    assert [(f["url"], f["status"], f["ok"]) for f in sim.stats.fetches] == [(source, 200, True)]

    states = [await poll(http, sim, rid) for _ in range(4)]
    assert [s["status"] for s in states] == [QUEUED, PROCESSING, COMPLETED, COMPLETED]
    done = states[2]
    assert set(done) == {"request_id", "status", "model_id", "error", "output", "created_at", "updated_at",
                         "completed_at"}
    assert done["request_id"] == rid
    assert done["error"] is None
    assert done["completed_at"]
    assert states[0]["output"] is None
    assert states[0]["completed_at"] is None
    assert done["output"]["media_type"] == "image/png"
    (url,) = done["output"]["media_url"]
    img = await fetch_png(http, url)
    assert img.size == (1024, 768)  # the input's 256 x 192, times 4
    assert sim.stats.polls[rid] == 4
    assert sim.jobs[rid].polls == 4
    assert sim.stats.calls[-1] == {"method": "GET", "path": STATUS_PATH.format(request_id=rid), "body": None}


async def test_unknown_jobs_answer_404_request_not_found(http: aiohttp.ClientSession, sim: Simulator) -> None:
    async with http.get(sim.url + STATUS_PATH.format(request_id="no-such-job"), headers=KEY) as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "Request not found"}


@pytest.mark.parametrize(("endpoint", "values", "size", "mode"), [
    (UPSCALER, {"scale": 2}, (512, 384), "RGB"),
    (RMBG, {}, (256, 192), "RGBA"),
    (OUTPAINT, {"zoom_out_percentage": 50}, (384, 288), "RGB"),
])
async def test_each_queue_model_completes_through_the_client_with_a_real_png_sized_from_its_input(
        http: aiohttp.ClientSession, sim: Simulator, client: PixazoClient, endpoint: Endpoint,
        values: dict[str, Any], size: tuple[int, int], mode: str) -> None:
    body = wire(endpoint, image=small_input(sim, 256, 192), **values)
    answer = await client.submit(endpoint, body)
    assert answer.image_url is None
    assert answer.request_id in sim.jobs
    assert sim.stats.calls[-1] == {"method": "POST", "path": endpoint.path, "body": body}
    seen = [(await client.poll(answer.request_id)).state for _ in range(3)]
    assert seen == [QUEUED, PROCESSING, COMPLETED]
    final = await client.poll(answer.request_id)
    assert final.image_url is not None
    img = await fetch_png(http, final.image_url)
    assert (img.size, img.mode) == (size, mode)
    if mode == "RGBA":  # a transparent background around an opaque subject
        assert img.getpixel((0, 0))[3] == 0  # type: ignore[index]
        assert img.getpixel((128, 96))[3] == 255  # type: ignore[index]


async def test_outpaint_accepts_its_fixed_fields(http: aiohttp.ClientSession, sim: Simulator) -> None:
    body = wire(OUTPAINT, image=small_input(sim), zoom_out_percentage=20)
    assert body["num_images"] == 1
    assert body["output_format"] == "png"
    status, _, _ = await post(http, sim, OUTPAINT, body)
    assert status == 202


async def test_upscales_past_the_largest_side_are_scaled_down_keeping_the_aspect(
        http: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.queue_polls_before_done = 0
    status, _, text = await post(http, sim, UPSCALER, wire(UPSCALER, image=small_input(sim, 300, 200), scale=8))
    assert status == 202
    done = await poll(http, sim, json.loads(text)["request_id"])
    img = await fetch_png(http, done["output"]["media_url"][0])
    assert img.size == (MAX_SIDE, 1365)  # 2400 x 1600, scaled into 2048


async def test_a_job_can_be_polled_to_completion_from_a_new_connection(sim: Simulator) -> None:
    """What a restarted server does: the job lives in the simulator, not in the first client's session."""
    async with aiohttp.ClientSession() as first:
        answer = await PixazoClient(first, sim.url, SecretStr(TEST_KEY), aiohttp.ClientTimeout(total=10)).submit(
            RMBG, wire(RMBG, image=small_input(sim)))
        assert answer.request_id is not None
        assert (await PixazoClient(first, sim.url, SecretStr(TEST_KEY),
                                   aiohttp.ClientTimeout(total=10)).poll(answer.request_id)).state == QUEUED
    async with aiohttp.ClientSession() as second:
        again = PixazoClient(second, sim.url, SecretStr(TEST_KEY), aiohttp.ClientTimeout(total=10))
        assert [(await again.poll(answer.request_id)).state for _ in range(2)] == [PROCESSING, COMPLETED]


# --- timing and job faults -------------------------------------------------------------------------

async def test_slow_jobs_stay_pending_until_their_time_and_can_be_finished_early(http: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=TEST_KEY, queue_polls_before_done=0, queue_seconds=0.3) as sim:
        status, _, text = await post(http, sim, RMBG, wire(RMBG, image=small_input(sim)))
        assert status == 202
        rid = json.loads(text)["request_id"]
        assert (await poll(http, sim, rid))["status"] == QUEUED
        states = []
        for _ in range(100):  # bounded: about 2 s at most
            states.append((await poll(http, sim, rid))["status"])
            if states[-1] == COMPLETED:
                break
            await asyncio.sleep(0.02)
        assert states[0] == PROCESSING
        assert states[-1] == COMPLETED

        sim.queue_seconds = 3600
        _, _, text = await post(http, sim, RMBG, wire(RMBG, image=small_input(sim)))
        slow = json.loads(text)["request_id"]
        assert [(await poll(http, sim, slow))["status"] for _ in range(5)] == [QUEUED] + [PROCESSING] * 4
        sim.finish(slow)
        assert (await poll(http, sim, slow))["status"] == COMPLETED


@pytest.mark.parametrize("state", [FAILED, ERROR])
async def test_a_job_fault_ends_the_next_job_failed_or_error_with_its_text(
        sim: Simulator, client: PixazoClient, state: str) -> None:
    sim.push(JobFault(state=state, error="NSFW content detected"))
    first = await client.submit(UPSCALER, wire(UPSCALER, image=small_input(sim), scale=2))
    second = await client.submit(UPSCALER, wire(UPSCALER, image=small_input(sim), scale=2))
    assert first.request_id
    assert second.request_id
    statuses = [await client.poll(first.request_id) for _ in range(3)]
    assert [s.state for s in statuses] == [QUEUED, PROCESSING, state]
    assert statuses[-1].error == "NSFW content detected"
    assert statuses[-1].image_url is None
    # only the next job: the one after completes
    assert [(await client.poll(second.request_id)).state for _ in range(3)][-1] == COMPLETED


async def test_a_stuck_job_stays_processing_until_finished(sim: Simulator, client: PixazoClient) -> None:
    sim.push(JobFault(state=PROCESSING))
    job = await client.submit(RMBG, wire(RMBG, image=small_input(sim)))
    assert job.request_id is not None
    assert [(await client.poll(job.request_id)).state for _ in range(8)] == [PROCESSING] * 8
    sim.finish(job.request_id, ERROR, "worker lost")
    final = await client.poll(job.request_id)
    assert (final.state, final.error) == (ERROR, "worker lost")


async def test_status_faults_answer_once_then_the_job_carries_on(sim: Simulator, client: PixazoClient) -> None:
    sim.queue_polls_before_done = 0
    job = await client.submit(RMBG, wire(RMBG, image=small_input(sim)))
    assert job.request_id is not None
    sim.push(Fault(kind="http", status=503, route="status"),
             Fault(kind="http", status=429, headers={"Retry-After": "2"}, route="status"))
    with pytest.raises(UpstreamHTTPError) as first:
        await client.poll(job.request_id)
    with pytest.raises(UpstreamHTTPError) as second:
        await client.poll(job.request_id)
    assert (first.value.status, second.value.status) == (503, 429)
    assert second.value.retry_after == 2
    assert sim.jobs[job.request_id].polls == 0  # the faults answered instead of the job
    assert (await client.poll(job.request_id)).state == COMPLETED


async def test_a_submit_fault_answers_a_queue_model_with_an_error(sim: Simulator, client: PixazoClient) -> None:
    sim.push(Fault(kind="http", status=402, body='{"error":"Insufficient Balance","message":"Required: $0.01"}'))
    with pytest.raises(UpstreamHTTPError) as caught:
        await client.submit(RMBG, wire(RMBG, image=small_input(sim)))
    assert caught.value.status == 402
    assert "Insufficient Balance" in str(caught.value)
    assert not sim.jobs


async def test_the_control_routes_set_faults_timing_and_finish_jobs(http: aiohttp.ClientSession,
                                                                     sim: Simulator) -> None:
    """What a test in another process uses (the restart test kills a server, not the simulator)."""
    async with http.post(sim.url + "/_sim/faults", json={
            "faults": [{"kind": "http", "status": 500, "route": "status"}],
            "job_faults": [{"state": "PROCESSING"}, {"state": "FAILED", "error": "bad input"}],
            "queue": {"polls_before_done": 0, "seconds": 0}}) as resp:
        assert await resp.json() == {"queued": 0, "status_faults": 1, "job_faults": 2}
    rids = []
    for _ in range(3):
        _, _, text = await post(http, sim, RMBG, wire(RMBG, image=small_input(sim)))
        rids.append(json.loads(text)["request_id"])
    stuck, failed, fine = rids
    async with http.get(sim.url + STATUS_PATH.format(request_id=fine), headers=KEY) as resp:
        assert resp.status == 500  # the status fault, once
    assert (await poll(http, sim, fine))["status"] == COMPLETED  # polls_before_done 0: the first poll
    assert (await poll(http, sim, failed))["error"] == "bad input"
    assert (await poll(http, sim, stuck))["status"] == PROCESSING
    async with http.post(sim.url + f"/_sim/jobs/{stuck}", json={"state": "COMPLETED"}) as resp:
        assert resp.status == 200
    assert (await poll(http, sim, stuck))["status"] == COMPLETED
    async with http.get(sim.url + "/_sim/jobs") as resp:
        jobs = await resp.json()
    assert {rid: (jobs[rid]["status"], jobs[rid]["polls"], jobs[rid]["path"]) for rid in rids} == {
        stuck: (COMPLETED, 2, RMBG.path), failed: (FAILED, 1, RMBG.path), fine: (COMPLETED, 1, RMBG.path)}
    async with http.get(sim.url + "/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["polls"] == {stuck: 2, failed: 1, fine: 2}
    assert [f["url"] for f in stats["fetches"]] == [small_input(sim)] * 3
    assert stats["calls"][0] == {"method": "POST", "path": RMBG.path, "body": {"image_url": small_input(sim)}}
    async with http.post(sim.url + "/_sim/jobs/nope", json={}) as resp:
        assert resp.status == 404
    async with http.post(sim.url + "/_sim/faults", json={"job_faults": [{"state": "SOMETIMES"}]}) as resp:
        assert resp.status == 400


# --- input images ----------------------------------------------------------------------------------

async def test_inputs_pixazo_cannot_fetch_fail_the_job_and_are_recorded(sim: Simulator, client: PixazoClient) -> None:
    sim.queue_polls_before_done = 0
    gone = f"http://127.0.0.1:{free_port()}/nothing-listens.png"
    cases = [
        (f"{sim.url}/images/not-an-image-name.png", "HTTP 404", 404),
        (f"{sim.url}/_sim/html.png", "not an image", 200),
        (gone, "could not fetch image", None),
    ]
    for url, words, status in cases:
        job = await client.submit(RMBG, wire(RMBG, image=url))
        assert job.request_id is not None  # accepted, like Pixazo does, then failed
        final = await client.poll(job.request_id)
        assert final.state == FAILED
        assert final.error is not None
        assert "could not fetch image" in final.error
        assert words in final.error
        assert (sim.stats.fetches[-1]["url"], sim.stats.fetches[-1]["status"]) == (url, status)
        assert sim.stats.fetches[-1]["ok"] is False


async def test_inpainting_fetches_both_inputs_and_refuses_one_it_cannot_reach(
        http: aiohttp.ClientSession, sim: Simulator, client: PixazoClient) -> None:
    image, mask = small_input(sim, 512, 512), small_input(sim, 512, 512)
    body = wire(INPAINT, prompt="a hat", image=image, mask=mask)
    answer = await client.submit(INPAINT, body)
    assert answer.image_url is not None
    assert (await fetch_png(http, answer.image_url)).size == (512, 512)  # the input's size
    assert [(f["url"], f["ok"]) for f in sim.stats.fetches] == [(image, True), (mask, True)]
    sized = await client.submit(INPAINT, wire(INPAINT, prompt="a hat", image=image, mask=mask, width=768,
                                                height=512))
    assert sized.image_url is not None
    assert "-768x512-" in sized.image_url

    broken = wire(INPAINT, prompt="a hat", image=image, mask=f"{sim.url}/images/missing.png")
    status, ctype, text = await post(http, sim, INPAINT, broken)
    assert (status, ctype) == (400, "application/json")
    assert "could not fetch maskUrl" in json.loads(text)["error"]


async def test_inputs_are_sized_from_their_header_whatever_pillows_process_wide_cap_is(
        sim: Simulator, client: PixazoClient) -> None:
    """A server under test sets Pillow's decompression-bomb cap for its whole process, which the
    simulator shares; an input over that cap is still a fine input for Pixazo."""
    sim.queue_polls_before_done = 0
    before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, 1000
    try:
        job = await client.submit(UPSCALER, wire(UPSCALER, image=small_input(sim, 256, 192), scale=2))
        assert job.request_id is not None
        final = await client.poll(job.request_id)
    finally:
        Image.MAX_IMAGE_PIXELS = before
    assert final.state == COMPLETED
    assert final.image_url is not None
    assert "-512x384-" in final.image_url
    assert (sim.stats.fetches[-1]["width"], sim.stats.fetches[-1]["height"]) == (256, 192)


async def test_a_job_fault_can_time_one_job_and_reset_keeps_the_jobs(http: aiohttp.ClientSession,
                                                                      sim: Simulator) -> None:
    sim.push(JobFault(state=COMPLETED, polls=4))
    _, _, text = await post(http, sim, RMBG, wire(RMBG, image=small_input(sim)))
    slow = json.loads(text)["request_id"]
    _, _, text = await post(http, sim, RMBG, wire(RMBG, image=small_input(sim)))
    usual = json.loads(text)["request_id"]  # the simulator's own timing: done on the third poll
    assert [(await poll(http, sim, slow))["status"] for _ in range(5)] == [QUEUED] + [PROCESSING] * 3 + [COMPLETED]
    sim.push(JobFault(state=FAILED), Fault(kind="http", status=503, route="status"))
    async with http.post(sim.url + "/_sim/reset") as resp:
        assert resp.status == 200
    assert not sim.job_faults
    assert not sim.status_faults
    assert sim.stats.polls == {}
    # the jobs are Pixazo's: a reset between tests does not lose one being polled
    assert [(await poll(http, sim, usual))["status"] for _ in range(3)] == [QUEUED, PROCESSING, COMPLETED]
