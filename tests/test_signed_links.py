"""Signed links to stored images (issue 15): what Pixazo is handed for an input whose own Pixazo URL is
no longer fresh. Checked on a real server process: Pixazo (the simulator) fetches the link without
credentials; an expired, altered or other-image link is refused; the link is in no row, result or log."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aioresponses import CallbackResult
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from yarl import URL

from app.core.links import LinkSigner
from app.pixazo.gateway import EDITORS, SDXL_PATH
from app.pixazo.simulator import Simulator
from tests.conftest import (
    SESSION_SECRET,
    free_port,
    http_client,
    in_memory_client,
    live_server,
    make_settings,
    rows,
    without_xmp,
)
from tests.test_generate import BASE, Upstream, _Response
from tests.test_process import server_process

SECRET = SESSION_SECRET
ALICE = "tok-alice-0123456789"
UPSCALE = EDITORS["upscale"].path
KEY = bytes(range(32))


def link_key(db_path: Path) -> bytes:
    """The server's signed-link key, from its database (where every replica finds it)."""
    with sqlite3.connect(db_path) as conn:
        return bytes.fromhex(conn.execute("SELECT value FROM server_keys WHERE name = 'signed_links'").fetchone()[0])


def test_a_link_is_refused_expired_altered_or_for_another_image() -> None:
    signer = LinkSigner(KEY, 600, "https://mcp.example.com/")
    now = 1_800_000_000
    url = signer.url(7, now=now)
    assert url.startswith("https://mcp.example.com/signed/7?expires=1800000600&sig=")
    expires, sig = re.search(r"expires=(\d+)&sig=([0-9a-f]{64})$", url).groups()  # type: ignore[union-attr]
    assert signer.seconds_left(7, expires, sig, now=now) == 600
    assert signer.seconds_left(7, expires, sig, now=now + 599) == 1
    assert signer.seconds_left(7, expires, sig, now=now + 600) is None  # expired
    assert signer.seconds_left(8, expires, sig, now=now) is None  # another image
    assert signer.seconds_left(7, str(int(expires) + 60), sig, now=now) is None  # a longer life
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert signer.seconds_left(7, expires, flipped, now=now) is None
    assert signer.seconds_left(7, expires, sig[:-1], now=now) is None
    assert signer.seconds_left(7, None, sig, now=now) is None
    assert signer.seconds_left(7, "-1", sig, now=now) is None
    # Another key (another deployment) signs differently; replicas sharing one key agree.
    assert LinkSigner(bytes(32), 600, "https://x").seconds_left(7, expires, sig, now=now) is None
    assert LinkSigner(KEY, 600, None).seconds_left(7, expires, sig, now=now) == 600
    # A lowered TTL shortens links already handed out.
    assert LinkSigner(KEY, 60, None).seconds_left(7, expires, sig, now=now) == 60


async def test_pixazo_fetches_an_old_input_by_a_signed_link_without_credentials(tmp_path: Path,
                                                                                sim: Simulator) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = {"PIXAZO_PUBLIC_URL": public, "PIXAZO_AUTH_TOKENS": f"alice:{ALICE}", "PIXAZO_SESSION_SECRET": SECRET,
           "PIXAZO_UPSTREAM_URL_FRESH_S": "0", "PIXAZO_POLL_BASE_S": "0.02", "PIXAZO_LOG_FORMAT": "json",
           "PIXAZO_SIGNED_LINK_TTL_S": "300"}
    async with server_process(tmp_path, sim, port=port, **env) as (_proc, url):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=60) as auth_http,
            Client(streamable_http_client(url + "/mcp", http_client=auth_http)) as alice,
        ):
            made = await alice.call_tool("pix_generate", {"prompt": "a fox"})
            assert not made.is_error, made.content[0].text
            source = made.structured_content
            result = await alice.call_tool("pix_upscale", {"image": source["id"]})
            assert not result.is_error, result.content[0].text
        (body,) = [c["body"] for c in sim.stats.calls if c["path"] == UPSCALE]
        link = body["image"]
        assert link.startswith(f"{public}/signed/{source['id']}?expires=")
        assert "&sig=" in link
        # The simulator fetched it as Pixazo would: no credentials, and it worked.
        fetch = sim.stats.fetches[-1]
        assert (fetch["url"], fetch["status"], fetch["ok"], fetch["width"]) == (link, 200, True, 1024)
        async with httpx2.AsyncClient(timeout=30) as anyone:
            got = await anyone.get(link)
            assert got.status_code == 200
            assert got.headers["content-type"] == "image/png"
            assert without_xmp(got.content) == sim.image_bytes(source["image_url"])  # the stored copy
            max_age = int(re.fullmatch(r"private, max-age=(\d+)", got.headers["cache-control"]).group(1))  # type: ignore[union-attr]
            assert 0 < max_age <= 300
            expired = LinkSigner(link_key(tmp_path / "pixazo.db"), 300, public).url(source["id"],
                                                                                    now=time.time() - 301)
            sig = link.rsplit("=", 1)[1]
            altered = link[:-1] + ("0" if link[-1] != "0" else "1")
            other = link.replace(f"/signed/{source['id']}?", f"/signed/{source['id'] + 1}?")
            longer = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 3600}", link)
            for bad in (expired, altered, other, longer, link.split("&sig=")[0], f"{public}/signed/x?sig={sig}"):
                refused = await anyone.get(bad)
                # one answer for every reason: nothing says which
                assert (refused.status_code, refused.text) == (403, "forbidden"), bad
    # The link (its signature) is in no row, no result and no log line.
    assert sig not in json.dumps(rows(tmp_path / "pixazo.db"))
    assert sig not in json.dumps(result.structured_content)
    assert sig not in str(result.content)
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "pix_upscale" in log
    assert sig not in log
    assert "/signed/" not in log
    (_, row) = rows(tmp_path / "pixazo.db")
    assert (row["status"], row["parent_id"], json.loads(row["parameters_json"])) == (
        "SUCCESS", source["id"], {"image": source["id"], "scale": 2})


async def test_a_pixazo_error_echoing_the_link_is_scrubbed_everywhere(tmp_path: Path, sim: Simulator,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, BASE, public_url="https://mcp.example.com", upstream_url_fresh_s=0,
                             session_secret=SecretStr(SECRET), max_retries=0)

    def echo(url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(status=400, payload={"error": f"could not fetch {kwargs['json']['image']}"},
                              response_class=_Response)

    with Upstream(passthrough=[sim.url]) as upstream:
        upstream.post(BASE + SDXL_PATH, payload={"imageUrl": sim.url + "/images/3-1024x1024-0.png"})
        upstream.post(BASE + UPSCALE, callback=echo)
        async with in_memory_client(settings) as client:
            assert not (await client.call_tool("pix_generate", {"prompt": "p"})).is_error
            result = await client.call_tool("pix_upscale", {"image": 1})
        (sent,) = upstream.requests[("POST", URL(BASE + UPSCALE))]
    link = sent.kwargs["json"]["image"]
    assert link.startswith("https://mcp.example.com/signed/1?expires=")
    sig = link.rsplit("=", 1)[1]
    assert result.is_error
    assert sig not in str(result.content)
    (_, row) = rows(settings.db_path)
    assert row["status"] == "HTTP_400"
    assert "sig=[redacted]" in row["upstream_error"]
    assert sig not in json.dumps(row)
    assert sig not in caplog.text


async def test_a_fresh_pixazo_url_is_preferred_to_a_signed_link(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, BASE, public_url="https://mcp.example.com", session_secret=SecretStr(SECRET))
    image = sim.url + "/images/3-1024x1024-0.png"
    with Upstream(passthrough=[sim.url]) as upstream:
        upstream.post(BASE + SDXL_PATH, payload={"imageUrl": image})
        upstream.post(BASE + UPSCALE, status=400, payload={"error": "no"})
        async with in_memory_client(settings) as client:
            assert not (await client.call_tool("pix_generate", {"prompt": "p"})).is_error
            await client.call_tool("pix_upscale", {"image": 1})
        (sent,) = upstream.requests[("POST", URL(BASE + UPSCALE))]
    # Younger than PIXAZO_UPSTREAM_URL_FRESH_S (an hour): Pixazo's own URL, no link to our server.
    assert sent.kwargs["json"] == {"image": image, "scale_factor": 2}


def forged(key: bytes, public: str, gen_id: int) -> str:
    return LinkSigner(key, 600, public).url(gen_id)


async def test_links_are_signed_with_a_random_key_in_the_database_not_one_derived_from_the_session_secret(
        tmp_path: Path, sim: Simulator) -> None:
    """Issue 19, point 1: with a known session secret, links forged as the old key derivation made them
    read every image. The key is now random, kept in the shared database, and two deployments with the
    same secret have different keys."""
    import hashlib
    import hmac

    public = "https://mcp.example.com"
    settings = make_settings(tmp_path, sim.url, public_url=public, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             session_secret=SecretStr(SECRET))
    async with live_server(settings) as live, http_client(live, headers={"Authorization": f"Bearer {ALICE}"}) as c:
        made = await c.call_tool("pix_generate", {"prompt": "a fox"})
        assert not made.is_error
        gen_id = made.structured_content["id"]
        old_key = hmac.new(SECRET.encode(), b"pixazo-mcp signed image links v1", hashlib.sha256).digest()
        key = link_key(settings.db_path)
        async with httpx2.AsyncClient(timeout=30) as anyone:
            by_secret = await anyone.get(forged(old_key, live.url, gen_id))
            by_key = await anyone.get(forged(key, live.url, gen_id))
    assert by_secret.status_code == 403
    assert by_key.status_code == 200  # the database's key is the one in force
    assert key != old_key
    assert len(key) == 32
    other = make_settings(tmp_path / "other", sim.url, public_url=public, session_secret=SecretStr(SECRET))
    async with in_memory_client(other):
        pass
    assert link_key(other.db_path) not in (key, old_key)


async def test_signed_links_are_not_served_without_a_public_url(tmp_path: Path, sim: Simulator) -> None:
    """Issue 19, point 1: /signed/{id} answered even where no link could have been made."""
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"))
    async with live_server(settings) as live, http_client(live, headers={"Authorization": f"Bearer {ALICE}"}) as c:
        made = await c.call_tool("pix_generate", {"prompt": "a fox"})
        assert not made.is_error
        link = forged(link_key(settings.db_path), live.url, made.structured_content["id"])
        async with httpx2.AsyncClient(timeout=30) as anyone:
            got = await anyone.get(link)
            image = await anyone.get(f"{live.url}/images/{made.structured_content['id']}")
    assert got.status_code == 404
    assert image.status_code == 401  # and the image itself still needs a credential
