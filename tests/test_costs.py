"""What calls cost and what callers may spend (issue 15): prices and the prices file, cost_usd on every
row, daily budgets (exact, per caller, never blocking free calls), pix_status, /metrics and the gallery."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from yarl import URL

from app.core.costs import Budgets, Prices, PricesFileError, parse_prices, usd
from app.core.requests import build_request
from app.core.state import open_state
from app.pixazo.gateway import CATALOGUE, STATUS_PATH
from app.pixazo.simulator import Fault, Simulator
from app.settings import Settings, SettingsError
from app.storage.records import Generation
from app.web.gallery import UNKNOWN_COST
from tests.conftest import (
    SESSION_SECRET,
    TEST_KEY,
    LiveServer,
    http_client,
    in_memory_client,
    live_server,
    make_settings,
    store_for,
)
from tests.test_generate import BASE, Upstream
from tests.test_startup import pixazo
from tests.test_team import ALICE, BOB, TOKENS, bearer

LIGHTNING = BASE + CATALOGUE["sdxl-lightning"].path


def prices_file(tmp_path: Path, prices: dict[str, Any], name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(prices))
    return path


async def recorded(url: str) -> list[Generation]:
    """Every row, oldest first, read through the store of either engine."""
    store = await store_for(url)
    try:
        return list(reversed(await store.page(limit=100)))
    finally:
        await store.close()


# --- Prices --------------------------------------------------------------------------------------
def test_the_catalogue_prices_are_pixazos_published_figures() -> None:
    prices = Prices()
    assert prices.price(CATALOGUE["sdxl"], {}) == 0
    assert prices.price(CATALOGUE["sdxl-lightning"], {}) == 0
    assert prices.price(CATALOGUE["flux-schnell"], {}) == 0
    assert prices.price(CATALOGUE["sd-inpainting"], {}) == 0
    assert prices.price(CATALOGUE["bria-rmbg-2.0"], {"image": "x"}) == 0.018
    upscaler = CATALOGUE["crystal-upscaler"]
    assert [prices.price(upscaler, {"scale": s}) for s in (2, 4, 6, 8)] == [0.07, 0.12, 0.23, 0.45]
    assert prices.price(upscaler, {"scale": 3}) is None  # not a tier: unknown, never guessed
    assert prices.price(CATALOGUE["image-outpaint"], {}) is None  # nothing published


def test_a_prices_file_overrides_some_entries_and_keeps_the_others(tmp_path: Path) -> None:
    path = prices_file(tmp_path, {"crystal-upscaler": {"2": 0.05}, "image-outpaint": 0.02, "sdxl": 0.01,
                                  "bria-rmbg-2.0": None})
    prices = Prices.load(make_settings(tmp_path, prices_file=path))
    upscaler = CATALOGUE["crystal-upscaler"]
    assert [prices.price(upscaler, {"scale": s}) for s in (2, 4)] == [0.05, 0.12]
    assert prices.price(CATALOGUE["image-outpaint"], {}) == 0.02
    assert prices.price(CATALOGUE["sdxl"], {}) == 0.01
    assert prices.price(CATALOGUE["bria-rmbg-2.0"], {}) is None
    assert prices.price(CATALOGUE["flux-schnell"], {}) == 0
    flat = Prices(parse_prices({"crystal-upscaler": 0.1}, "x"))
    assert [flat.price(upscaler, {"scale": s}) for s in (2, 8)] == [0.1, 0.1]
    assert ("crystal-upscaler", "upscale", "scale 4", 0.12) in prices.table()


@pytest.mark.parametrize(("document", "expected"), [
    ({"dall-e": 0.04}, "entry 'dall-e' is not a model (known: sdxl, "),
    ({"sdxl": -1}, "entry 'sdxl': a price must be a number >= 0"),
    ({"sdxl": True}, "entry 'sdxl': a price must be a number >= 0"),
    ({"sdxl": "0.1"}, "entry 'sdxl': a price must be a number >= 0"),
    ({"sdxl": {"2": 0.1}}, "entry 'sdxl': sdxl has one price, not tiers"),
    ({"crystal-upscaler": {"3": 0.1}}, "entry 'crystal-upscaler': tier '3' is not a scale of crystal-upscaler"),
    ({"crystal-upscaler": {"2": None}}, "entry 'crystal-upscaler': a price must be a number >= 0"),
    ([0.07], "it accepts a JSON object of model name -> price"),
])
def test_a_bad_prices_entry_is_refused_naming_the_file_and_the_entry(document: Any, expected: str) -> None:
    with pytest.raises(PricesFileError) as caught:
        parse_prices(document, "/etc/prices.json")
    assert str(caught.value).startswith(f"PIXAZO_PRICES_FILE /etc/prices.json: {expected}")


def test_a_prices_file_that_is_not_json_or_missing_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{sdxl: 0}")
    with pytest.raises(PricesFileError, match=r"^PIXAZO_PRICES_FILE .*broken.json: not valid JSON"):
        Prices.load(make_settings(tmp_path, prices_file=broken))
    with pytest.raises(PricesFileError, match=r"^PIXAZO_PRICES_FILE .*absent.json: cannot be read"):
        Prices.load(make_settings(tmp_path, prices_file=tmp_path / "absent.json"))


def test_prices_are_written_for_people() -> None:
    assert [usd(0.07), usd(0.018), usd(5), usd(0.14000000000000001), usd(None)] == [
        "$0.07", "$0.018", "$5.00", "$0.14", "unknown"]


def test_a_bad_prices_file_stops_the_server_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    path = prices_file(tmp_path, {"sdxl": 0, "midjourney": 0.1})
    done = pixazo(tmp_path, "serve", PIXAZO_PRICES_FILE=str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"pixazo-mcp: PIXAZO_PRICES_FILE {path}: entry 'midjourney' is not a model (known: "
                           f"{', '.join(CATALOGUE)})\n")


# --- Budget settings -------------------------------------------------------------------------------
def test_per_caller_budgets_override_the_default(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, daily_budget_usd=1, caller_budgets_usd="alice:5, bob:0.5,ops:none")
    budgets = Budgets.from_settings(settings)
    assert settings.caller_budgets_usd == {"alice": 5.0, "bob": 0.5, "ops": None}
    assert [budgets.for_caller(c) for c in ("alice", "bob", "ops", "carol", None)] == [5, 0.5, None, 1, 1]


@pytest.mark.parametrize("value", ["alice", "alice:-1", "alice:lots", ":5", "alice:1,alice:2", "alice:nan"])
def test_a_bad_per_caller_budget_is_a_one_line_settings_error(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(_env_file=None, caller_budgets_usd=value)
    assert str(caught.value) == (f"PIXAZO_CALLER_BUDGETS_USD={value!r} is not valid: it accepts a "
                                 "comma-separated list of caller:USD (a number >= 0, or none)")


def test_a_bad_budget_setting_stops_the_server_with_exit_code_2(tmp_path: Path) -> None:
    done = pixazo(tmp_path, "serve", PIXAZO_DAILY_BUDGET_USD="-2")
    assert done.returncode == 2
    assert done.stderr.startswith("pixazo-mcp: PIXAZO_DAILY_BUDGET_USD='-2' is not valid: it accepts a number >= 0")
    done = pixazo(tmp_path, "serve", PIXAZO_CALLER_BUDGETS_USD="bob=1")
    assert done.returncode == 2
    assert done.stderr.startswith("pixazo-mcp: PIXAZO_CALLER_BUDGETS_USD='bob=1' is not valid")


# --- Budgets at work -------------------------------------------------------------------------------
async def test_a_budget_reached_exactly_refuses_the_next_call_with_nothing_sent(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, database_url=SecretStr(database_url), inline_image="none",
                             prices_file=prices_file(tmp_path, {"sdxl": 0.07}), daily_budget_usd=0.14)
    async with in_memory_client(settings) as client:
        first = await client.call_tool("pix_generate", {"prompt": "one"})
        second = await client.call_tool("pix_generate", {"prompt": "two"})  # 0.07 + 0.07 fits 0.14 exactly
        third = await client.call_tool("pix_generate", {"prompt": "three"})
        status = (await client.call_tool("pix_status", {})).structured_content
    assert not first.is_error
    assert not second.is_error, second.content[0].text
    assert (first.structured_content["cost_usd"], second.structured_content["cost_usd"]) == (0.07, 0.07)
    assert third.is_error
    assert sim.stats.requests == 2  # the third never reached Pixazo
    text = third.content[0].text
    assert "BUDGET_EXCEEDED" in text
    assert "has spent $0.14 of its $0.14 budget for this UTC day, and this call costs $0.07 (sdxl)" in text
    assert "Nothing was sent to Pixazo. The budget resets at midnight UTC (in " in text
    found = await recorded(database_url)
    assert [(g.prompt, g.status, g.cost_usd) for g in found] == [
        ("one", "SUCCESS", 0.07), ("two", "SUCCESS", 0.07), ("three", "BUDGET_EXCEEDED", 0)]
    assert status["spent_today_usd"] == 0.14
    assert status["daily_budget_usd"] == 0.14
    assert status["budget_remaining_usd"] == 0


async def test_each_caller_has_its_own_budget_and_overrides_win(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, inline_image="none",
                             prices_file=prices_file(tmp_path, {"sdxl": 0.07}), daily_budget_usd=0.07,
                             caller_budgets_usd="bob:0.14")
    async with live_server(settings) as live:
        async with http_client(live, headers=bearer(ALICE)) as alice:
            alice_calls = [await alice.call_tool("pix_generate", {"prompt": f"alice {i}"}) for i in range(2)]
            alice_status = (await alice.call_tool("pix_status", {})).structured_content
        async with http_client(live, headers=bearer(BOB)) as bob:
            bob_calls = [await bob.call_tool("pix_generate", {"prompt": f"bob {i}"}) for i in range(3)]
            bob_status = (await bob.call_tool("pix_status", {})).structured_content
    assert [c.is_error for c in alice_calls] == [False, True]  # the default: one call
    assert [c.is_error for c in bob_calls] == [False, False, True]  # bob's own budget: two, alice's spend aside
    assert "of its $0.07 budget" in alice_calls[1].content[0].text
    assert "has spent $0.14 of its $0.14 budget" in bob_calls[2].content[0].text
    assert sim.stats.requests == 3
    assert (alice_status["spent_today_usd"], alice_status["daily_budget_usd"],
            alice_status["budget_remaining_usd"]) == (0.07, 0.07, 0)
    assert (bob_status["spent_today_usd"], bob_status["daily_budget_usd"], bob_status["budget_remaining_usd"]) == (
        0.14, 0.14, 0)


async def test_free_calls_pass_a_spent_budget_even_one_lowered_below_the_spend(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    prices = prices_file(tmp_path, {"sdxl": 0.07})
    common: dict[str, Any] = {"database_url": SecretStr(database_url), "inline_image": "none", "prices_file": prices}
    async with in_memory_client(make_settings(tmp_path, sim.url, daily_budget_usd=0.07, **common)) as client:
        paid = await client.call_tool("pix_generate", {"prompt": "paid"})
    assert not paid.is_error
    # The operator lowers the budget below what was spent today: priced calls stop, free ones go on.
    with Upstream(passthrough=[sim.url]) as upstream:
        upstream.post(LIGHTNING, payload={"imageUrl": sim.url + "/images/7-1024x1024-0.png"})
        lowered = make_settings(tmp_path, BASE, daily_budget_usd=0.05, **common)
        async with in_memory_client(lowered) as client:
            free = await client.call_tool("pix_generate", {"prompt": "free", "model": "sdxl-lightning"})
            refused = await client.call_tool("pix_generate", {"prompt": "paid again"})
            status = (await client.call_tool("pix_status", {})).structured_content
    assert not free.is_error, free.content[0].text
    assert free.structured_content["cost_usd"] == 0
    assert refused.is_error
    assert "has spent $0.07 of its $0.05 budget" in refused.content[0].text
    assert [(g.prompt, g.model, g.status, g.cost_usd) for g in await recorded(database_url)] == [
        ("paid", "sdxl", "SUCCESS", 0.07), ("free", "sdxl-lightning", "SUCCESS", 0),
        ("paid again", "sdxl", "BUDGET_EXCEEDED", 0)]
    assert (status["spent_today_usd"], status["budget_remaining_usd"]) == (0.07, 0)


async def test_a_call_of_unknown_price_is_refused_under_a_budget_and_allowed_without(
        tmp_path: Path, sim: Simulator) -> None:
    prices = prices_file(tmp_path, {"sdxl": None})
    async with in_memory_client(make_settings(tmp_path, sim.url, prices_file=prices, daily_budget_usd=10)) as client:
        refused = await client.call_tool("pix_generate", {"prompt": "unknown price"})
    assert refused.is_error
    assert "sdxl has no known price, so it cannot be checked against this caller's daily budget of $10.00" in (
        refused.content[0].text)
    assert sim.stats.requests == 0
    async with in_memory_client(make_settings(tmp_path, sim.url, prices_file=prices)) as client:
        allowed = await client.call_tool("pix_generate", {"prompt": "no budget"})
    assert not allowed.is_error
    found = await recorded(f"sqlite:///{tmp_path / 'pixazo.db'}")
    assert [(g.status, g.cost_usd, g.error) for g in found] == [
        ("BUDGET_EXCEEDED", 0, "budget: unknown price"), ("SUCCESS", None, None)]


# --- What each row costs ---------------------------------------------------------------------------
async def test_a_call_pixazo_refused_costs_nothing_and_gives_its_budget_back(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, database_url=SecretStr(database_url), inline_image="none",
                             prices_file=prices_file(tmp_path, {"sdxl": 0.07}), daily_budget_usd=0.07,
                             timeout_s=0.5)
    sim.push(Fault("http", status=500, body="Error processing request"), Fault("http", status=402, body=json.dumps(
        {"error": "Insufficient Balance", "message": "Your wallet does not have enough balance."})))
    async with in_memory_client(settings) as client:
        failed = await client.call_tool("pix_generate", {"prompt": "a 500"})
        broke = await client.call_tool("pix_generate", {"prompt": "a 402"})
        status = (await client.call_tool("pix_status", {})).structured_content
        # Neither charged: the whole budget is still there for a call that succeeds.
        sim.push(Fault("hang"))
        hung = await client.call_tool("pix_generate", {"prompt": "no answer"})
    assert failed.is_error
    assert broke.is_error
    assert hung.is_error
    assert status["spent_today_usd"] == 0
    assert [(g.status, g.cost_usd) for g in await recorded(database_url)] == [
        ("HTTP_500", 0), ("HTTP_402", 0), ("TIMEOUT", 0.07)]  # a timeout after sending may have been charged


async def test_a_queue_job_that_errors_costs_nothing_and_one_that_fails_keeps_its_price(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, BASE, poll_base_s=0.01, poll_cap_s=0.02)
    remover = CATALOGUE["bria-rmbg-2.0"]
    outcomes = []
    with Upstream() as upstream:
        async with open_state(settings) as state:
            for job, ending in (("job-1", "ERROR"), ("job-2", "FAILED")):
                upstream.post(BASE + remover.path, status=202, payload={"request_id": job, "status": "QUEUED"})
                upstream.get(BASE + STATUS_PATH.format(request_id=job),
                             payload={"request_id": job, "status": ending, "error": "it broke"})
                request = build_request(settings, remover, {"image": "https://example.test/in.png"},
                                        inputs={"image": "https://example.test/in.png"})
                outcomes.append(await state.service.generate(request, "alice"))
            metrics = state.service.metrics.render().decode()
    assert [(o.generation.status, o.generation.cost_usd) for o in outcomes] == [("JOB_ERROR", 0), ("JOB_FAILED", 0.018)]
    assert [(g.status, g.operation, g.cost_usd) for g in await recorded(settings.database)] == [
        ("JOB_ERROR", "remove_background", 0), ("JOB_FAILED", "remove_background", 0.018)]
    assert 'pixazo_spend_usd_total{caller="alice"} 0.018' in metrics



async def test_a_queue_job_cancelled_while_polled_keeps_its_price(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, BASE, poll_base_s=0.01, poll_cap_s=0.02)
    remover = CATALOGUE["bria-rmbg-2.0"]
    status_url = BASE + STATUS_PATH.format(request_id="job-1")
    with Upstream() as upstream:
        upstream.post(BASE + remover.path, status=202, payload={"request_id": "job-1", "status": "QUEUED"})
        upstream.get(status_url, payload={"request_id": "job-1", "status": "PROCESSING"}, repeat=True)
        async with open_state(settings) as state:
            request = build_request(settings, remover, {"image": "https://example.test/in.png"},
                                    inputs={"image": "https://example.test/in.png"})
            task = asyncio.create_task(state.service.generate(request, "alice"))
            for _ in range(500):  # bounded: the job is submitted and polled within a few ms
                if upstream.requests.get(("GET", URL(status_url))):
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    # The job was accepted and may run to its end at Pixazo: it may be charged.
    assert [(g.status, g.cost_usd) for g in await recorded(settings.database)] == [("CANCELLED", 0.018)]


async def test_a_call_without_a_key_is_never_sent_and_costs_nothing(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, api_key=None, prices_file=prices_file(tmp_path, {"sdxl": 0.07}))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "no key"})
    assert result.is_error
    assert sim.stats.requests == 0
    assert [(g.status, g.cost_usd) for g in await recorded(settings.database)] == [("EXCEPTION", 0)]

# --- Where the spend is shown ------------------------------------------------------------------------
def spend_by_caller(text: str) -> dict[str, float]:
    return {sample.labels["caller"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "pixazo_spend_usd_total"}


async def test_metrics_count_spend_per_caller(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, inline_image="none",
                             prices_file=prices_file(tmp_path, {"sdxl": 0.07}))
    sim.push(Fault("http", status=500, body="Error processing request"))
    async with live_server(settings) as live:
        async with http_client(live, headers=bearer(BOB)) as bob:
            failed = await bob.call_tool("pix_generate", {"prompt": "not charged"})
            await bob.call_tool("pix_generate", {"prompt": "bob"})
        async with http_client(live, headers=bearer(ALICE)) as alice:
            for i in range(2):
                await alice.call_tool("pix_generate", {"prompt": f"alice {i}"})
        async with httpx2.AsyncClient(headers=bearer(ALICE)) as http:
            text = (await http.get(live.url + "/metrics")).text
    assert failed.is_error
    spend = spend_by_caller(text)
    assert spend.keys() == {"alice", "bob"}
    assert spend["alice"] == pytest.approx(0.14)
    assert spend["bob"] == pytest.approx(0.07)


async def test_the_gallery_shows_each_generations_cost(tmp_path: Path, sim: Simulator) -> None:
    priced = make_settings(tmp_path, sim.url, inline_image="none", prices_file=prices_file(tmp_path, {"sdxl": 0.07}))
    unknown = priced.model_copy(update={"prices_file": prices_file(tmp_path, {"sdxl": None}, "unknown.json")})
    sim.push(Fault("http", status=500, body="Error processing request"))
    async with in_memory_client(priced) as client:
        await client.call_tool("pix_generate", {"prompt": "refused by pixazo"})  # 1: free
        await client.call_tool("pix_generate", {"prompt": "paid"})  # 2: $0.07
    async with in_memory_client(unknown) as client:
        await client.call_tool("pix_generate", {"prompt": "price unknown"})  # 3: unknown
    async with live_server(priced) as live, httpx2.AsyncClient() as http:
        index = (await http.get(live.url + "/gallery")).text
        details = [(await http.get(f"{live.url}/gallery/{i}")).text for i in (1, 2, 3)]
    cards = dict(re.findall(r'data-id="(\d+)".*?<span class="cost" title="Cost">([^<]*)</span>', index, re.S))
    assert cards == {"1": "free", "2": "$0.07", "3": UNKNOWN_COST}
    assert [re.search(r'<dd id="cost">([^<]*)</dd>', d).group(1) for d in details] == [  # type: ignore[union-attr]
        "free", "$0.07", UNKNOWN_COST]



async def test_two_replicas_on_one_database_never_pass_a_callers_budget_together(
        tmp_path: Path, postgres_url: str) -> None:
    # Calls overlap in flight (the simulator takes 0.3 s): each counts at its price from the moment it
    # is admitted, in the database both replicas share.
    async with Simulator(latency=0.3, api_key=TEST_KEY) as sim:
        settings = make_settings(tmp_path, sim.url, database_url=SecretStr(postgres_url), auth_tokens=TOKENS,
                                 session_secret=SecretStr(SESSION_SECRET), inline_image="none",
                                 prices_file=prices_file(tmp_path, {"sdxl": 0.07}), daily_budget_usd=0.21)
        async with live_server(settings) as one, live_server(settings) as two:

            async def burst(live: LiveServer) -> list[Any]:
                async with http_client(live, headers=bearer(ALICE)) as alice:
                    return list(await asyncio.gather(*(alice.call_tool("pix_generate", {"prompt": f"p{i}"})
                                                       for i in range(3))))

            results = [r for batch in await asyncio.gather(burst(one), burst(two)) for r in batch]
        assert sim.stats.requests == 3
    assert sorted(r.is_error for r in results) == [False] * 3 + [True] * 3
    statuses = sorted((g.status, g.cost_usd) for g in await recorded(postgres_url))
    assert statuses == [("BUDGET_EXCEEDED", 0)] * 3 + [("SUCCESS", 0.07)] * 3
