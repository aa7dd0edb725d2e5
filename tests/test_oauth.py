"""The server's own OAuth authorization server, end to end on a real uvicorn socket: discovery, dynamic
registration, the sign-in page, codes with PKCE, resource binding, refresh rotation, revocation."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from app.settings import Settings
from app.storage.database import engine_of, sqlite_path
from app.storage.oauth_records import ACCESS, REFRESH
from tests.conftest import SESSION_SECRET, LiveServer, free_port, live_server, make_settings, rows, store_for
from tests.oauth_helpers import (
    REDIRECT,
    Grant,
    MemoryStorage,
    Person,
    client_metadata,
    db_bytes,
    mcp_status,
    oauth_rows,
    sdk_auth,
)

ALICE = "alice-team-token-0123456789"
BOB = "bob-team-token-0123456789xx"


def oauth_settings(tmp_path: Path, sim: Simulator, port: int, **overrides: Any) -> Settings:
    return make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"),
                         public_url=f"http://127.0.0.1:{port}", **overrides)


@pytest.fixture
async def server(tmp_path: Path, sim: Simulator) -> AsyncIterator[LiveServer]:
    port = free_port()
    async with live_server(oauth_settings(tmp_path, sim, port), port=port) as live:
        yield live


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


async def test_discovery_from_a_401_to_both_metadata_documents(server: LiveServer,
                                                               http: httpx2.AsyncClient) -> None:
    refused = await http.post(server.mcp_url, json={})
    challenge = refused.headers["www-authenticate"]
    prm_url = f"{server.url}/.well-known/oauth-protected-resource/mcp"
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{prm_url}"' in challenge
    for url in (prm_url, f"{server.url}/.well-known/oauth-protected-resource"):
        prm = (await http.get(url)).json()
        assert prm["resource"] == server.mcp_url
        assert prm["authorization_servers"] == [server.url]
    meta = (await http.get(server.url + "/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == server.url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["registration_endpoint"] == server.url + "/register"
    assert meta["revocation_endpoint"] == server.url + "/revoke"
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "none" in meta["token_endpoint_auth_methods_supported"]


async def test_dcr_sign_in_and_generate_with_the_sdk_client(server: LiveServer) -> None:
    person = Person(ALICE)
    storage = MemoryStorage()
    # client_secret_post: the SDK registers a confidential client, whose secret we keep only hashed.
    auth = sdk_auth(server.mcp_url, person, storage, client_metadata("Claude (test)", "client_secret_post"))
    async with (httpx2.AsyncClient(auth=auth, timeout=30) as http,
                Client(streamable_http_client(server.mcp_url, http_client=http)) as client):
        status = (await client.call_tool("pix_status", {})).structured_content
        result = await client.call_tool("pix_generate", {"prompt": "a kite over the dunes"})
    assert status is not None
    assert status["caller"] == "alice"
    assert not result.is_error
    (row,) = rows(server.settings.db_path)
    assert row["caller"] == "alice"
    assert row["status"] == "SUCCESS"

    # the sign-in page named the client and where it sends people back; the answer named us (RFC 9207)
    page = person.pages[0]
    assert "Claude (test)" in page.text
    assert '<strong id="redirect-host">127.0.0.1</strong>' in page.text  # the host name alone
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert person.final is not None
    assert parse_qs(urlsplit(person.final.headers["location"]).query)["iss"] == [server.url]

    # secrets are stored hashed: neither the client secret nor a token appears in the database file
    assert storage.client is not None
    assert storage.client.client_secret
    assert storage.tokens is not None
    db = db_bytes(server.settings.db_path)
    for secret in (storage.client.client_secret, storage.tokens.access_token, storage.tokens.refresh_token or "?"):
        assert secret.encode() not in db
    hashes = {r["token_sha256"] for r in oauth_rows(server.settings.db_path, "oauth_tokens")}
    assert hashlib.sha256(storage.tokens.access_token.encode()).hexdigest() in hashes
    (client_row,) = oauth_rows(server.settings.db_path, "oauth_clients")
    assert client_row["secret_sha256"] == hashlib.sha256(storage.client.client_secret.encode()).hexdigest()


async def test_static_bearer_tokens_keep_working_beside_oauth(server: LiveServer, http: httpx2.AsyncClient) -> None:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=30) as bearer,
                Client(streamable_http_client(server.mcp_url, http_client=bearer)) as client):
        status = (await client.call_tool("pix_status", {})).structured_content
    assert status is not None
    assert status["caller"] == "bob"
    assert await mcp_status(http, server.url, "not-a-token-of-anyone-here") == 401


async def test_deny_sends_access_denied_and_no_code(server: LiveServer, http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    assert (await grant.register(http)).status_code == 201
    person = Person(ALICE, decision="deny")
    signin_url, fields = await person.open_signin(http, grant.authorize_url())
    answer = await person.answer(http, signin_url, fields)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(REDIRECT)
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [grant.state]
    assert query["iss"] == [server.url]
    assert "code" not in query
    assert oauth_rows(server.settings.db_path, "oauth_codes") == []


async def test_a_wrong_team_token_shows_the_page_again_without_a_code(server: LiveServer,
                                                                     http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    person = Person(ALICE)
    signin_url, fields = await person.open_signin(http, grant.authorize_url())
    wrong = await person.answer(http, signin_url, fields, token="alice-team-token-but-wrong")
    assert wrong.status_code == 401
    assert "location" not in wrong.headers
    assert "That token is not valid." in wrong.text
    assert oauth_rows(server.settings.db_path, "oauth_codes") == []
    # the same request can still be answered with the right token
    right = await person.answer(http, signin_url, fields)
    assert right.status_code == 303
    assert "code=" in right.headers["location"]


async def test_the_form_needs_its_csrf_cookie(server: LiveServer, http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    person = Person(ALICE)
    signin_url, fields = await person.open_signin(http, grant.authorize_url())
    async with httpx2.AsyncClient(timeout=30) as other_browser:  # a cross-site post carries no cookie
        forged = await other_browser.post(signin_url.split("?")[0], data={**fields, "token": ALICE,
                                                                          "decision": "allow"})
    assert forged.status_code == 403
    assert "location" not in forged.headers
    assert oauth_rows(server.settings.db_path, "oauth_codes") == []


async def test_redirect_uris_are_matched_exactly_and_must_be_https_or_loopback(
        server: LiveServer, http: httpx2.AsyncClient) -> None:
    refused = await Grant(server.url).register(http, redirect_uris=["http://evil.example/callback"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_redirect_uri"
    assert (await Grant(server.url).register(http, redirect_uris=["https://claude.ai/api/mcp/auth_callback"])
            ).status_code == 201
    grant = Grant(server.url)
    await grant.register(http)
    for other in ("http://127.0.0.1:9/callback/", "http://127.0.0.1:10/callback", "http://127.0.0.1:9/other"):
        answer = await http.get(grant.authorize_url(redirect_uri=other))
        assert answer.status_code == 400, other  # shown to the person, never sent to the unregistered URI
        assert answer.json()["error"] == "invalid_request"
        assert "location" not in answer.headers


async def test_a_replayed_code_is_refused_and_revokes_what_it_gave(server: LiveServer,
                                                                   http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    code = await grant.code(http, ALICE)
    first = await grant.exchange(http, code)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert first.json()["expires_in"] == 3600
    assert await mcp_status(http, server.url, access) == 200
    replay = await grant.exchange(http, code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert await mcp_status(http, server.url, access) == 401


async def test_a_wrong_pkce_verifier_is_refused(server: LiveServer, http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    code = await grant.code(http, ALICE)
    wrong = await grant.exchange(http, code, verifier="x" * 64)
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant",
                                                         "error_description": "incorrect code_verifier"}
    # S256 only: a plain challenge is sent back to the client as an error, never to the sign-in page
    plain = await http.get(grant.authorize_url(code_challenge_method="plain"))
    assert plain.status_code == 302
    query = parse_qs(urlsplit(plain.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["iss"] == [server.url]


async def test_tokens_are_bound_to_this_resource(tmp_path: Path, sim: Simulator, http: httpx2.AsyncClient) -> None:
    port_a, port_b = free_port(), free_port()
    settings_a = oauth_settings(tmp_path, sim, port_a)
    # Another server on the same database (a replica under another name): it shares the tables.
    settings_b = oauth_settings(tmp_path, sim, port_b)
    async with live_server(settings_a, port=port_a) as a, live_server(settings_b, port=port_b) as b:
        grant = Grant(a.url)
        await grant.register(http)
        # asking /authorize for another resource is refused back to the client
        other = await http.get(grant.authorize_url(resource="https://other.example/mcp"))
        assert other.status_code == 302
        query = parse_qs(urlsplit(other.headers["location"]).query)
        assert query["error"] == ["invalid_target"]
        assert query["iss"] == [a.url]
        # so is the token request (the SDK's handler alone would ignore it on the code grant)
        code = await grant.code(http, ALICE)
        foreign = await grant.exchange(http, code, resource="https://other.example/mcp")
        assert foreign.status_code == 400
        assert foreign.json()["error"] == "invalid_target"
        tokens = (await grant.exchange(http, code)).json()
        assert await mcp_status(http, a.url, tokens["access_token"]) == 200
        # a token for A's resource is refused by B, though B can read the same table
        assert await mcp_status(http, b.url, tokens["access_token"]) == 401
        # and B will not redeem A's codes either
        grant_b = Grant(b.url, client_id=grant.client_id)
        code_a = await grant.code(http, ALICE)
        cross = await grant_b.exchange(http, code_a, verifier=grant.verifier)
        assert cross.status_code == 400


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(
        server: LiveServer, http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    first = (await grant.exchange(http, await grant.code(http, ALICE))).json()
    second = await grant.refresh(http, first["refresh_token"])
    assert second.status_code == 200
    second_tokens = second.json()
    assert second_tokens["refresh_token"] != first["refresh_token"]
    assert await mcp_status(http, server.url, second_tokens["access_token"]) == 200
    # the first refresh token comes back: someone holds a copy; the whole grant ends
    reuse = await grant.refresh(http, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert await mcp_status(http, server.url, second_tokens["access_token"]) == 401
    assert (await grant.refresh(http, second_tokens["refresh_token"])).status_code == 400
    # another grant of the same person is untouched
    other = (await grant.exchange(http, await grant.code(http, ALICE))).json()
    assert await mcp_status(http, server.url, other["access_token"]) == 200


async def test_an_expired_token_is_refused_and_the_sdk_client_signs_in_again(server: LiveServer) -> None:
    storage = MemoryStorage()
    person = Person(ALICE)
    async with (httpx2.AsyncClient(auth=sdk_auth(server.mcp_url, person, storage), timeout=30) as http,
                Client(streamable_http_client(server.mcp_url, http_client=http)) as client):
        await client.call_tool("pix_status", {})
    assert storage.tokens is not None
    first = storage.tokens
    # An hour passes: the server's record says the access token is over.
    with sqlite3.connect(server.settings.db_path) as conn:
        conn.execute("UPDATE oauth_tokens SET expires_at = 0 WHERE kind = 'access'")
    async with httpx2.AsyncClient(timeout=30) as raw:
        assert await mcp_status(raw, server.url, first.access_token) == 401
    # The client still thinks it valid; it is refused, and signs in again (the person answers once more).
    async with (httpx2.AsyncClient(auth=sdk_auth(server.mcp_url, person, storage), timeout=30) as http,
                Client(streamable_http_client(server.mcp_url, http_client=http)) as client):
        status = (await client.call_tool("pix_status", {})).structured_content
    assert status is not None
    assert status["caller"] == "alice"
    assert storage.tokens.access_token != first.access_token


async def test_revocation_ends_the_grant(server: LiveServer, http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    tokens = (await grant.exchange(http, await grant.code(http, ALICE))).json()
    assert await mcp_status(http, server.url, tokens["access_token"]) == 200
    revoked = await http.post(server.url + "/revoke", data={"token": tokens["refresh_token"],
                                                            "client_id": grant.client_id})
    assert revoked.status_code == 200
    assert await mcp_status(http, server.url, tokens["access_token"]) == 401
    assert (await grant.refresh(http, tokens["refresh_token"])).status_code == 400


async def test_registration_is_rate_limited(tmp_path: Path, sim: Simulator, http: httpx2.AsyncClient) -> None:
    port = free_port()
    async with live_server(oauth_settings(tmp_path, sim, port, oauth_registrations_per_hour=2), port=port) as live:
        answers = [(await Grant(live.url).register(http)).status_code for _ in range(3)]
        assert answers == [201, 201, 429]


async def test_oauth_needs_a_way_to_sign_in(tmp_path: Path) -> None:
    from app.identity.tokens import ConfigError
    from app.web.app import create_app

    with pytest.raises(ConfigError, match="needs a way to sign in"):
        create_app(make_settings(tmp_path, public_url="https://mcp.example.com"))
    with pytest.raises(ConfigError, match="https"):
        create_app(make_settings(tmp_path, auth_tokens=SecretStr(f"alice:{ALICE}"),
                                 public_url="http://mcp.example.com"))
    with pytest.raises(ConfigError, match="together"):
        create_app(make_settings(tmp_path, public_url="https://mcp.example.com",
                                 oidc_issuer="https://login.example.com", oidc_client_id="pixazo"))
    with pytest.raises(ConfigError, match="PIXAZO_OIDC_CALLERS"):
        create_app(make_settings(tmp_path, public_url="https://mcp.example.com",
                                 oidc_issuer="https://login.example.com", oidc_client_id="pixazo",
                                 oidc_client_secret=SecretStr("s3cret-0123456789")))


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_operators_list_clients_and_revoke_by_client_or_caller(server: LiveServer,
                                                                     http: httpx2.AsyncClient) -> None:
    db = str(server.settings.db_path)
    claude, chatgpt = Grant(server.url), Grant(server.url)
    await claude.register(http, client_name="Claude")
    await chatgpt.register(http, client_name="ChatGPT")
    alice_in_claude = (await claude.exchange(http, await claude.code(http, ALICE))).json()
    bob_in_chatgpt = (await chatgpt.exchange(http, await chatgpt.code(http, BOB))).json()
    alice_in_chatgpt = (await chatgpt.exchange(http, await chatgpt.code(http, ALICE))).json()

    code, out = await cli("oauth", "--db", db, "clients")
    assert code == 0
    assert f"{claude.client_id}  [dcr] Claude" in out
    assert f"{chatgpt.client_id}  [dcr] ChatGPT" in out
    assert "tokens issued (alice)" in out
    assert "live tokens: 4 (callers: alice, bob)" in out  # an access and a refresh token per grant

    code, out = await cli("oauth", "--db", db, "revoke", claude.client_id)
    assert code == 0
    assert "revoked 2 token(s)" in out
    assert await mcp_status(http, server.url, alice_in_claude["access_token"]) == 401
    assert await mcp_status(http, server.url, bob_in_chatgpt["access_token"]) == 200

    code, out = await cli("oauth", "--db", db, "revoke", "--caller", "bob")
    assert code == 0
    assert await mcp_status(http, server.url, bob_in_chatgpt["access_token"]) == 401
    assert (await chatgpt.refresh(http, bob_in_chatgpt["refresh_token"])).status_code == 400
    assert await mcp_status(http, server.url, alice_in_chatgpt["access_token"]) == 200

    code, out = await cli("oauth", "--db", db, "revoke", "no-such-client")
    assert code == 1
    assert "no OAuth client 'no-such-client'" in out
    code, out = await cli("oauth", "--db", db, "clients")
    assert "revoked by an operator" in out


def test_sso_rules_first_match_wins_and_unverified_addresses_prove_nothing() -> None:
    from app.identity.sso import caller_for, parse_rules
    from app.identity.tokens import ConfigError

    rules = parse_rules(["boss@team.example=alice", "group:design=design", "@team.example=*"])
    assert caller_for({"email": "Boss@Team.example"}, rules, "groups") == "alice"
    assert caller_for({"email": "kim@team.example", "groups": ["design"]}, rules, "groups") == "design"
    assert caller_for({"email": "kim@team.example"}, rules, "groups") == "kim@team.example"
    assert caller_for({"email": "kim@team.example", "email_verified": False}, rules, "groups") is None
    assert caller_for({"email": "kim@team.example.evil.com"}, rules, "groups") is None
    assert caller_for({"email": "x@other.example", "groups": "design"}, rules, "groups") is None
    for bad in (["team.example=x"], ["@team.example"], ["@team.example=bad name"]):
        with pytest.raises(ConfigError, match="PIXAZO_OIDC_CALLERS"):
            parse_rules(bad)


async def test_the_sdk_client_refreshes_by_rotation_and_a_replayed_refresh_token_ends_the_grant(
        server: LiveServer) -> None:
    storage, person = MemoryStorage(), Person(ALICE)
    auth = sdk_auth(server.mcp_url, person, storage, client_metadata(auth_method="none"))
    async with (httpx2.AsyncClient(auth=auth, timeout=30) as http,
                Client(streamable_http_client(server.mcp_url, http_client=http)) as client,
                httpx2.AsyncClient(timeout=30) as raw):
        await client.call_tool("pix_status", {})
        first = storage.tokens
        assert first is not None
        assert first.refresh_token is not None
        auth.context.token_expiry_time = time.time() - 1  # an hour later, as the client sees it
        status = (await client.call_tool("pix_status", {})).structured_content
        second = storage.tokens
        assert status is not None
        assert status["caller"] == "alice"
        assert second is not None
        assert second.access_token != first.access_token
        assert second.refresh_token not in (None, first.refresh_token)
        assert len(person.pages) == 2  # the person signed in once (the page, the answer): that was a refresh
        # Someone kept the first refresh token and plays it now: the whole grant ends.
        assert storage.client is not None
        replay = await raw.post(server.url + "/token", data={
            "grant_type": "refresh_token", "refresh_token": first.refresh_token,
            "client_id": storage.client.client_id})
        assert replay.status_code == 400
        assert await mcp_status(raw, server.url, second.access_token) == 401


async def test_confidential_clients_prove_their_secret_against_its_hash(server: LiveServer,
                                                                        http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    assert (await grant.register(http, token_endpoint_auth_method="client_secret_basic")).status_code == 201
    assert grant.client_secret
    code = await grant.code(http, ALICE)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": grant.client_id, "code_verifier": grant.verifier}
    for auth in (None, (grant.client_id, "not-the-secret"), ("someone-else", grant.client_secret)):
        refused = await http.post(server.url + "/token", data=form, auth=auth)
        assert refused.status_code == 401, auth
        assert refused.json()["error"] == "invalid_client"
    accepted = await http.post(server.url + "/token", data=form, auth=(grant.client_id, grant.client_secret))
    assert accepted.status_code == 200
    assert await mcp_status(http, server.url, accepted.json()["access_token"]) == 200


async def test_rows_long_expired_are_purged_at_the_next_sign_in(server: LiveServer,
                                                               http: httpx2.AsyncClient) -> None:
    grant = Grant(server.url)
    await grant.register(http)
    await grant.exchange(http, await grant.code(http, ALICE))
    assert len(oauth_rows(server.settings.db_path, "oauth_tokens")) == 2
    with sqlite3.connect(server.settings.db_path) as conn:  # a month and more passes
        conn.execute("UPDATE oauth_tokens SET expires_at = 1")
        conn.execute("UPDATE oauth_codes SET expires_at = 1")
    await grant.code(http, ALICE)
    assert oauth_rows(server.settings.db_path, "oauth_tokens") == []
    assert len(oauth_rows(server.settings.db_path, "oauth_codes")) == 1  # only the new one


async def test_the_public_name_passes_the_host_and_origin_checks(tmp_path: Path, sim: Simulator,
                                                                 http: httpx2.AsyncClient) -> None:
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             public_url="https://mcp.example.com")
    async with live_server(settings, port=port) as live:
        meta = await http.get(live.url + "/.well-known/oauth-authorization-server",
                              headers={"Host": "mcp.example.com"})
        assert meta.status_code == 200
        assert meta.json()["issuer"] == "https://mcp.example.com"
        challenge = await http.post(live.url + "/mcp", json={}, headers={
            "Host": "mcp.example.com", "Origin": "https://mcp.example.com"})
        assert challenge.status_code == 401
        assert 'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"' in \
            challenge.headers["www-authenticate"]
        assert (await http.get(live.url + "/.well-known/oauth-authorization-server",
                               headers={"Host": "evil.example"})).status_code == 421
        assert (await http.post(live.url + "/oauth/signin", data={}, headers={
            "Host": "mcp.example.com", "Origin": "https://evil.example"})).status_code == 403


async def test_an_oauth_caller_sees_only_their_own_history_under_own_visibility(
        tmp_path: Path, sim: Simulator) -> None:
    port = free_port()
    async with live_server(oauth_settings(tmp_path, sim, port, history_visibility="own"), port=port) as live:
        async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=30) as bearer,
                    Client(streamable_http_client(live.mcp_url, http_client=bearer)) as bob):
            await bob.call_tool("pix_generate", {"prompt": "bob's balloon"})
        person = Person(ALICE)
        async with (httpx2.AsyncClient(auth=sdk_auth(live.mcp_url, person), timeout=30) as http,
                    Client(streamable_http_client(live.mcp_url, http_client=http)) as alice):
            await alice.call_tool("pix_generate", {"prompt": "alice's kite"})
            listed = (await alice.call_tool("list_generations", {})).structured_content
            bobs = await alice.call_tool("get_generation", {"id": 1})
    assert listed is not None
    assert [g["prompt"] for g in listed["generations"]] == ["alice's kite"]
    assert bobs.is_error
    assert [(r["prompt"], r["caller"]) for r in rows(live.settings.db_path)] == [
        ("bob's balloon", "bob"), ("alice's kite", "alice")]


def shared_oauth_settings(tmp_path: Path, sim: Simulator, database_url: str, public_port: int) -> Settings:
    """A replica's settings: the team's database and the one public name all replicas answer for."""
    return oauth_settings(tmp_path, sim, public_port, database_url=SecretStr(database_url),
                          session_secret=SecretStr(SESSION_SECRET))


async def test_the_whole_grant_over_http_on_each_engine(tmp_path: Path, sim: Simulator, database_url: str,
                                                        http: httpx2.AsyncClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    async with live_server(shared_oauth_settings(tmp_path, sim, database_url, port), port=port) as server:
        grant = Grant(server.url)
        registered = await grant.register(http)
        assert registered.status_code == 201, registered.text
        code = await grant.code(http, ALICE)
        first = await grant.exchange(http, code)
        assert first.status_code == 200, first.text
        tokens = first.json()
        assert await mcp_status(http, server.url, tokens["access_token"]) == 200
        # refresh rotates; the spent refresh token coming back ends the whole family
        second = await grant.refresh(http, tokens["refresh_token"])
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        assert await mcp_status(http, server.url, rotated["access_token"]) == 200
        reuse = await grant.refresh(http, tokens["refresh_token"])
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_grant"
        assert await mcp_status(http, server.url, rotated["access_token"]) == 401
        assert (await grant.refresh(http, rotated["refresh_token"])).status_code == 400
        # a code is good once: its replay is refused and ends what it gave
        replayed_code = await grant.code(http, ALICE)
        replayed = (await grant.exchange(http, replayed_code)).json()
        assert await mcp_status(http, server.url, replayed["access_token"]) == 200
        assert (await grant.exchange(http, replayed_code)).status_code == 400
        assert await mcp_status(http, server.url, replayed["access_token"]) == 401
        # a new grant, then revoked by its refresh token: its access token ends with it
        fresh = (await grant.exchange(http, await grant.code(http, ALICE))).json()
        assert await mcp_status(http, server.url, fresh["access_token"]) == 200
        revoked = await http.post(server.url + "/revoke", data={"token": fresh["refresh_token"],
                                                                "client_id": grant.client_id})
        assert revoked.status_code == 200
        assert await mcp_status(http, server.url, fresh["access_token"]) == 401
        assert (await grant.refresh(http, fresh["refresh_token"])).status_code == 400
        # the operators' commands act on the same database (PIXAZO_DATABASE_URL)
        last = (await grant.exchange(http, await grant.code(http, ALICE))).json()
        monkeypatch.setenv("PIXAZO_DATABASE_URL", database_url)
        code, out = await cli("oauth", "clients")
        assert code == 0, out
        assert f"{grant.client_id}  [dcr] Manual" in out
        assert "live tokens: 2 (callers: alice)" in out
        code, out = await cli("oauth", "revoke", "--caller", "alice")
        assert code == 0, out
        assert "revoked 2 token(s) signed in as alice" in out
        assert await mcp_status(http, server.url, last["access_token"]) == 401
    # the records are in the configured database (on PostgreSQL, the SQLite file never holds them)
    store = await store_for(database_url)
    try:
        clients = await store.oauth().clients()
    finally:
        await store.close()
    assert [c.client.client_id for c in clients] == [grant.client_id]
    assert clients[0].active_tokens == 0


async def test_replicas_on_one_database_share_clients_codes_and_tokens(
        tmp_path: Path, sim: Simulator, database_url: str, http: httpx2.AsyncClient) -> None:
    port_a, port_b = free_port(), free_port()
    # Both answer for A's public name, as replicas behind one balancer do.
    settings = shared_oauth_settings(tmp_path, sim, database_url, port_a)
    async with live_server(settings, port=port_a) as a, live_server(settings, port=port_b) as b:
        grant = Grant(a.url)
        assert (await grant.register(http)).status_code == 201
        code = await grant.code(http, ALICE)
        # the code given by A is redeemed at B, for a client registered at A
        answer = await http.post(b.url + "/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": grant.client_id, "code_verifier": grant.verifier, "resource": a.url + "/mcp"})
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        # the token B issued is accepted by A, and by B
        assert await mcp_status(http, a.url, tokens["access_token"]) == 200
        assert await mcp_status(http, b.url, tokens["access_token"]) == 200
        # revoked at A, refused at B at once
        revoked = await http.post(a.url + "/revoke", data={"token": tokens["access_token"],
                                                           "client_id": grant.client_id})
        assert revoked.status_code == 200
        assert await mcp_status(http, b.url, tokens["access_token"]) == 401


async def test_a_token_check_does_not_wait_behind_a_write_on_each_engine(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        records = store.oauth()
        await records.add_token("tok-0123456789", ACCESS, "client-1", "alice", ["pixazo"], "http://x/mcp",
                                "family-1", 3600)
        # Another writer holds an uncommitted change to that very row (a revocation in flight elsewhere).
        if engine_of(database_url) == "postgresql":
            writer: Any = await psycopg.AsyncConnection.connect(database_url)
            await writer.execute("UPDATE oauth_tokens SET revoked_at = 1")
        else:
            writer = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE oauth_tokens SET revoked_at = 1")
        try:
            # The check answers at once, from the last committed state.
            found = await asyncio.wait_for(records.token("tok-0123456789", ACCESS), 5)
            assert found is not None
            assert (found.caller, found.revoked_at) == ("alice", None)
            assert await records.token("tok-0123456789", REFRESH) is None
        finally:
            if engine_of(database_url) == "postgresql":
                await writer.close()
            else:
                writer.close()
        assert await records.revoke_family("family-1") == 1
        found = await records.token("tok-0123456789", ACCESS)
        assert found is not None
        assert found.revoked_at is not None
    finally:
        await store.close()


async def test_the_oauth_commands_name_an_unreachable_database_without_its_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXAZO_DATABASE_URL", f"postgresql://pixazo:pw-secret-123456@127.0.0.1:{free_port()}/x")
    code, out = await cli("oauth", "clients")
    assert code == 1
    assert "pixazo-mcp oauth: the database postgresql://pixazo:***@127.0.0.1:" in out
    assert "Traceback" not in out
    assert "pw-secret-123456" not in out
