"""A stock caching proxy in front of the server never hands a private image to a request without
credentials (issue 11, point 1)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from app.pixazo.simulator import Simulator
from tests.conftest import http_client, live_server, make_settings
from tests.services import nginx_log, start_nginx
from tests.test_team import ALICE, TOKENS, bearer


def caching_proxy(tmp_path: Path, upstream_port: int) -> tuple[str, str]:
    """An nginx `proxy_cache` configured the way a stock reverse proxy is: it caches whatever the
    upstream's headers allow, keyed on the URL alone (not on Authorization or Cookie)."""
    http = f"proxy_cache_path {tmp_path}/nginx/cache levels=1:2 keys_zone=images:1m max_size=50m;"
    server = f"""
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_cache images;
            add_header X-Cache-Status $upstream_cache_status always;
        }}"""
    return server, http


@pytest.mark.parametrize("credential", ["bearer", "cookie"])
async def test_a_caching_proxy_never_serves_a_private_image_without_credentials(
        tmp_path: Path, sim: Simulator, credential: str) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, inline_image="none")
    async with live_server(settings) as live:
        async with http_client(live, headers=bearer(ALICE)) as client:
            result = await client.call_tool("pix_generate", {"prompt": "a private castle"})
        gen_id = result.structured_content["id"]
        server, http = caching_proxy(tmp_path, int(live.url.rsplit(":", 1)[1]))
        with start_nginx(tmp_path, server, http) as port:
            proxy = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient(timeout=10) as signed_in:
                if credential == "bearer":
                    signed_in.headers.update(bearer(ALICE))
                else:
                    login = await signed_in.post(f"{proxy}/login", data={"token": ALICE, "next": "/gallery"})
                    assert login.status_code == 303, login.text
                    assert "pixazo_session" in signed_in.cookies
                # Twice: a cacheable answer would be stored by the first and served by the second.
                first = await signed_in.get(f"{proxy}/images/{gen_id}")
                second = await signed_in.get(f"{proxy}/images/{gen_id}")
                thumb = await signed_in.get(f"{proxy}/images/{gen_id}/thumb")
                metrics = await signed_in.get(f"{proxy}/metrics", headers=bearer(ALICE))
            async with httpx2.AsyncClient(timeout=10) as anonymous:
                stolen = await anonymous.get(f"{proxy}/images/{gen_id}")
                stolen_thumb = await anonymous.get(f"{proxy}/images/{gen_id}/thumb")
    assert first.status_code == second.status_code == thumb.status_code == 200, nginx_log(tmp_path)
    assert stolen.status_code == 401, stolen.headers.get("x-cache-status")
    assert stolen.content != first.content
    assert stolen_thumb.status_code == 401
    assert first.headers["content-type"] == "image/png"
    for response in (first, thumb):
        cache_control = response.headers["cache-control"]
        assert "public" not in cache_control
        assert "private" in cache_control or "no-store" in cache_control
        assert {v.strip().lower() for v in response.headers["vary"].split(",")} >= {"authorization", "cookie"}
    assert second.headers["x-cache-status"] != "HIT"
    assert metrics.status_code == 200
    assert metrics.headers["cache-control"] == "no-store"
