"""Hostile callers, round two (issue 19, points 2, 3, 4, 5 and 10), on a real uvicorn socket: the
brute-force block cannot be reset by an answer that verified nothing, the OAuth sign-in page counts and
ends guesses, /authorize stores only bounded requests, client metadata documents cannot be used to
starve sign-ins or fill the database, and one person's stale tokens lock nobody out of a shared egress."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from pydantic import SecretStr

from app.identity.oauth import MAX_PENDING_PER_ADDRESS, MAX_STATE_BYTES
from app.identity.signin import MAX_TOKEN_FAILURES
from app.pixazo.simulator import Simulator
from tests.conftest import LiveServer, free_port, live_server, make_settings
from tests.oauth_helpers import Grant, Person, oauth_rows
from tests.test_oauth_cimd import DocumentServer, docs, document  # docs is a fixture

ALICE = "alice-team-token-0123456789"
TOKENS = SecretStr(f"alice:{ALICE}")


def at(address: str) -> dict[str, str]:
    """Headers of a request from `address` (the test server trusts X-Forwarded-For from loopback)."""
    return {"X-Forwarded-For": address}


def bearer(token: str, address: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **at(address)}


@pytest.fixture
async def server(tmp_path: Path, sim: Simulator) -> AsyncIterator[LiveServer]:
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, public_url=f"http://127.0.0.1:{port}",
                             auth_failure_limit=5, auth_block_max_s=60)
    async with live_server(settings, port=port) as live:
        yield live


async def test_an_answer_that_verified_nothing_does_not_reset_the_count(server: LiveServer) -> None:
    """Point 2: /healthz answers any bearer 200, which once cleared the address's failures."""
    statuses: list[int] = []
    async with httpx2.AsyncClient(timeout=30) as http:
        for i in range(40):
            if i % 4 == 3:
                await http.get(f"{server.url}/healthz", headers=bearer(f"guess-{i}-0123456789abcdef", "198.51.100.9"))
            answer = await http.get(f"{server.url}/metrics", headers=bearer(f"guess-{i}-0123456789abcdef",
                                                                               "198.51.100.9"))
            statuses.append(answer.status_code)
        # A verified credential from another address is untouched; the guesser stays blocked.
        other = await http.get(f"{server.url}/metrics", headers=bearer(ALICE, "198.51.100.10"))
        still = await http.get(f"{server.url}/metrics", headers=bearer(ALICE, "198.51.100.9"))
    assert statuses[:4] == [401] * 4
    assert statuses.count(429) >= 30
    assert other.status_code == 200
    assert still.status_code == 429


async def test_the_block_is_cleared_only_by_a_verified_credential(server: LiveServer) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        for i in range(4):  # one short of the limit
            assert (await http.get(f"{server.url}/metrics", headers=bearer(f"g-{i}-0123456789abcdef",
                                                                           "198.51.100.20"))).status_code == 401
        assert (await http.get(f"{server.url}/metrics", headers=bearer(ALICE, "198.51.100.20"))).status_code == 200
        # The count started again: four more mistakes are still plain 401s.
        again = [(await http.get(f"{server.url}/metrics", headers=bearer(f"h-{i}-0123456789abcdef",
                                                                         "198.51.100.20"))).status_code
                 for i in range(4)]
    assert again == [401] * 4


async def test_wrong_tokens_on_the_sign_in_page_are_counted_logged_and_end_the_request(
        server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Point 3: 500 wrong tokens on one pending request went through, then the right one was accepted."""
    caplog.set_level(logging.INFO)
    async with httpx2.AsyncClient(timeout=30, headers=at("198.51.100.30")) as http:
        grant = Grant(server.url)
        await grant.register(http)
        person = Person(ALICE)
        signin_url, fields = await person.open_signin(http, grant.authorize_url())
        wrong = [await person.answer(http, signin_url, fields, token=f"wrong-{i}-0123456789abcdef")
                 for i in range(MAX_TOKEN_FAILURES)]
        right = await person.answer(http, signin_url, fields)  # too late: the request has ended
        assert right.status_code == 400
        # A new request from the same browser: the address's count goes on, to the block.
        signin_url, fields = await person.open_signin(http, grant.authorize_url())
        more = [await person.answer(http, signin_url, fields, token=f"more-{i}-0123456789abcdef")
                for i in range(3)]
    assert [w.status_code for w in wrong] == [401] * MAX_TOKEN_FAILURES
    assert "That token is not valid." in wrong[0].text
    assert "this sign-in has ended" in wrong[-1].text
    assert "code=" not in right.headers.get("location", "")
    assert oauth_rows(server.settings.db_path, "oauth_codes") == []
    assert [m.status_code for m in more] == [401, 401, 429]
    logged = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert [(r.path, r.credential, r.failures) for r in logged] == [  # type: ignore[attr-defined]
        ("/oauth/signin", "sign-in form", n) for n in range(1, 6)]
    assert "wrong-0-0123456789abcdef" not in caplog.text


async def test_authorize_refuses_a_long_state_and_bounds_pending_requests_per_address(server: LiveServer) -> None:
    """Point 4: each /authorize stored a row for 15 minutes with an unbounded state."""
    async with httpx2.AsyncClient(timeout=30) as http:
        grant = Grant(server.url)
        await grant.register(http)
        long = await http.get(grant.authorize_url(state="s" * (MAX_STATE_BYTES + 1)), headers=at("198.51.100.40"))
        fits = await http.get(grant.authorize_url(state="s" * MAX_STATE_BYTES), headers=at("198.51.100.40"))
        answers = [await http.get(grant.authorize_url(), headers=at("198.51.100.41"))
                   for _ in range(MAX_PENDING_PER_ADDRESS + 5)]
        neighbour = await http.get(grant.authorize_url(), headers=at("198.51.100.42"))
    assert long.status_code == 400
    assert f"longer than {MAX_STATE_BYTES} bytes" in long.json()["error_description"]
    assert fits.status_code == 302
    assert [a.status_code for a in answers] == [302] * len(answers)  # errors go back to the client
    refused = [parse_qs(urlsplit(a.headers["location"]).query) for a in answers[MAX_PENDING_PER_ADDRESS:]]
    assert all(q["error"] == ["temporarily_unavailable"] for q in refused)
    assert all(a.headers["location"].startswith("/oauth/signin") for a in answers[:MAX_PENDING_PER_ADDRESS])
    assert neighbour.headers["location"].startswith("/oauth/signin")
    pending = oauth_rows(server.settings.db_path, "oauth_requests")
    assert len(pending) == 1 + MAX_PENDING_PER_ADDRESS + 1
    assert max(len(r["params_json"]) for r in pending) < MAX_STATE_BYTES + 1024


async def test_a_stale_token_of_ours_is_no_guess_and_a_blocked_egress_still_lets_oauth_tokens_in(
        server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Point 10: hosted clients share egress addresses; one user's expired or revoked tokens, or another
    user's guesses, must not lock everyone behind that address out."""
    caplog.set_level(logging.INFO)
    egress = "198.51.100.50"
    async with httpx2.AsyncClient(timeout=30) as http:
        grant = Grant(server.url)
        await grant.register(http)
        tokens = (await grant.exchange(http, await grant.code(http, ALICE))).json()
        stale = (await grant.exchange(http, await grant.code(http, ALICE))).json()["access_token"]
        with sqlite3.connect(server.settings.db_path) as conn:  # one grant expires, as an hour later
            conn.execute("UPDATE oauth_tokens SET expires_at = ? WHERE expires_at < ? AND kind = 'access'"
                         " AND token_sha256 = (SELECT token_sha256 FROM oauth_tokens WHERE kind = 'access'"
                         " ORDER BY created_at DESC LIMIT 1)", (time.time() - 1, time.time() + 7200))
        stale_statuses = [await mcp_status_from(http, server.url, stale, egress) for _ in range(10)]
        # Someone behind the same egress guesses team tokens until the address is blocked.
        guesses = [(await http.get(f"{server.url}/metrics", headers=bearer(f"g-{i}-0123456789abcdef", egress)))
                   .status_code for i in range(7)]
        team = await http.get(f"{server.url}/metrics", headers=bearer(ALICE, egress))
        oauth = await mcp_status_from(http, server.url, tokens["access_token"], egress)
        unknown = await mcp_status_from(http, server.url, "pxa_" + "A" * 43, egress)
    assert stale_statuses == [401] * 10
    assert guesses[:5] == [401] * 5
    assert guesses[-1] == 429
    assert team.status_code == 429  # a guessable credential waits out the block
    assert oauth == 200  # an access token of ours cannot be guessed: it is checked anyway
    assert unknown == 401
    counted = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert all(r.path == "/metrics" for r in counted)  # type: ignore[attr-defined]
    assert "an expired or revoked token" in caplog.text
    assert stale not in caplog.text


async def mcp_status_from(http: httpx2.AsyncClient, base: str, token: str, address: str) -> int:
    answer = await http.post(base + "/mcp", headers={
        **bearer(token, address), "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    return answer.status_code


# Client metadata documents (point 5)

@pytest.fixture
async def cimd_server(tmp_path: Path, sim: Simulator,
                      docs: tuple[DocumentServer, Path]) -> AsyncIterator[LiveServer]:
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, public_url=f"http://127.0.0.1:{port}",
                             oauth_ca_file=docs[1], oauth_metadata_loopback_hosts=["localhost", "127.0.0.1"])
    async with live_server(settings, port=port) as live:
        yield live


async def test_slow_documents_do_not_starve_other_sign_ins_and_a_timeout_is_not_cached(
        cimd_server: LiveServer, docs: tuple[DocumentServer, Path]) -> None:
    """Point 5: 40 slow documents made legitimate sign-ins fail as "Client ID not found", cached 10 s."""
    doc_server, _ = docs
    for i in range(40):
        doc_server.documents[f"/slow-{i}.json"] = "slow"
    # The legitimate client's document is on another host (127.0.0.1, where the attacker's are on localhost).
    legit = f"https://127.0.0.1:{doc_server.port}/client.json"
    doc_server.documents["/client.json"] = document(legit)

    async def attack(i: int) -> httpx2.Response:
        return await http.get(Grant(cimd_server.url, client_id=doc_server.url(f"/slow-{i}.json")).authorize_url(),
                              headers=at(f"198.51.100.{60 + i}"))

    async with httpx2.AsyncClient(timeout=30) as http:
        attacks = [asyncio.create_task(attack(i)) for i in range(40)]
        await asyncio.sleep(0.5)  # the slow fetches are in flight
        started = time.monotonic()
        signin = await http.get(Grant(cimd_server.url, client_id=legit).authorize_url(), headers=at("203.0.113.1"))
        waited = time.monotonic() - started
        answers = await asyncio.gather(*attacks)
        fetched = sum(doc_server.hits.get(f"/slow-{i}.json", 0) for i in range(40))
        again = await http.get(Grant(cimd_server.url, client_id=doc_server.url("/slow-0.json")).authorize_url(),
                               headers=at("198.51.100.60"))
    assert signin.status_code == 302, signin.text
    assert signin.headers["location"].startswith("/oauth/signin")
    assert waited < 4  # not queued behind the slow ones
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(503) >= 40 - 4  # over the per-host cap: "try again", at once
    assert all(a.json()["error"] == "temporarily_unavailable" for a in answers)
    assert all("not found" not in a.text for a in answers)
    assert 1 <= fetched <= 4
    # A timeout is not remembered as "not found": the next sign-in fetches the document again.
    assert again.status_code == 503
    assert sum(doc_server.hits.get(f"/slow-{i}.json", 0) for i in range(40)) == fetched + 1


async def test_documents_add_no_client_until_someone_signs_in_and_one_address_is_bounded(
        cimd_server: LiveServer, docs: tuple[DocumentServer, Path]) -> None:
    """Point 5: 200 distinct document URLs added 200 client rows in 1.2 s, never expiring."""
    doc_server, _ = docs
    urls = [doc_server.url(f"/app-{i}.json") for i in range(30)]
    for i, url in enumerate(urls):
        doc_server.documents[f"/app-{i}.json"] = document(url)
    async with httpx2.AsyncClient(timeout=30) as http:
        one_address = [await http.get(Grant(cimd_server.url, client_id=url).authorize_url(),
                                      headers=at("198.51.100.100")) for url in urls[:25]]
        assert oauth_rows(cimd_server.settings.db_path, "oauth_clients") == []
        grant = Grant(cimd_server.url, client_id=urls[0])
        code = await grant.code(http, ALICE)
        assert (await grant.exchange(http, code)).status_code == 200
    statuses = [a.status_code for a in one_address]
    assert statuses[:20] == [302] * 20
    assert statuses[20:] == [503] * 5  # over the address's fetches per minute
    (row,) = oauth_rows(cimd_server.settings.db_path, "oauth_clients")
    assert (row["client_id"], row["kind"], row["client_name"]) == (urls[0], "cimd", "Metadata app")
    assert row["signed_in_at"] is not None

