"""Keeping images: safe downloads, results with links and thumbnails, resources, the image route."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from PIL import Image

from app.errors import DownloadError
from app.pixazo.simulator import Fault, Simulator
from app.settings import Settings
from app.storage.images import check_url, host_allowed
from tests.conftest import LiveServer, http_client, in_memory_client, make_settings, rows, without_xmp


def stored_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.image_dir.rglob("*") if p.is_file()) if settings.image_dir.exists() else []


async def generate(settings: Settings, **arguments: Any) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool("pix_generate", {"prompt": "a castle", **arguments})


@pytest.mark.parametrize(
    ("url_path", "reason"),
    [
        ("/images/missing.png", "the image host answered HTTP 404"),
        ("/_sim/html.png", "the downloaded file is not an image"),
        ("/_sim/big.png?bytes=300000", "larger than the 100000-byte limit"),
    ],
)
async def test_a_refused_download_leaves_download_failed_and_no_file(
        tmp_path: Path, sim: Simulator, url_path: str, reason: str) -> None:
    settings = make_settings(tmp_path, sim.url, max_image_bytes=100_000)
    remote = sim.url + url_path
    sim.push(Fault(kind="url", body=remote))
    result = await generate(settings)
    assert not result.is_error  # the image was made; only the copy failed
    text = result.content[0].text
    assert remote in text
    assert reason in text
    assert result.structured_content["status"] == "DOWNLOAD_FAILED"
    assert result.structured_content["resource_uri"] is None
    (row,) = rows(settings.db_path)
    assert row["status"] == "DOWNLOAD_FAILED"
    assert row["image_url"] == remote
    assert reason in row["error"]
    assert row["image_path"] is None
    assert stored_files(settings) == []


async def test_a_redirect_to_another_host_is_not_followed(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, allowed_image_hosts=["127.0.0.1"])
    elsewhere = f"http://localhost:{sim.port}/images/x.png"
    sim.push(Fault(kind="url", body=f"{sim.url}/_sim/redirect?to={elsewhere}"))
    result = await generate(settings)
    assert "the image host localhost is not on the allowed list" in result.content[0].text
    assert rows(settings.db_path)[0]["status"] == "DOWNLOAD_FAILED"
    assert stored_files(settings) == []


async def test_a_redirect_within_the_allowed_hosts_is_followed(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with in_memory_client(settings) as client:
        first = await client.call_tool("pix_generate", {"prompt": "original"})
        sim.push(Fault(kind="url", body=f"{sim.url}/_sim/redirect?to={first.structured_content['image_url']}"))
        second = await client.call_tool("pix_generate", {"prompt": "redirected"})
    assert second.structured_content["status"] == "SUCCESS"


async def test_a_host_not_on_the_list_is_never_contacted(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, allowed_image_hosts=["*.r2.dev"])
    result = await generate(settings)
    assert "the image host 127.0.0.1 is not on the allowed list" in result.content[0].text
    assert rows(settings.db_path)[0]["status"] == "DOWNLOAD_FAILED"
    assert stored_files(settings) == []


def test_url_rules() -> None:
    patterns = ["*.r2.dev", "127.0.0.1"]
    assert host_allowed("pub-1.r2.dev", patterns)
    assert not host_allowed("r2.dev.evil.com", patterns)
    assert not host_allowed("evilr2.dev", patterns)
    check_url("https://pub-1.r2.dev/a.png", patterns)
    check_url("http://127.0.0.1:9/a.png", patterns)
    with pytest.raises(DownloadError, match="only https"):
        check_url("http://pub-1.r2.dev/a.png", patterns)
    with pytest.raises(DownloadError, match="only https"):
        # a wildcard may admit a loopback address, but plain http needs the host named exactly
        check_url("http://127.0.0.1:9/a.png", ["*.0.0.1"])
    with pytest.raises(DownloadError, match="not on the allowed list"):
        check_url("file:///etc/passwd", patterns)


async def test_success_stores_the_image_and_records_path_size_hash_and_type(tmp_path: Path,
                                                                           sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    result = await generate(settings, width=1024, height=768)
    sc = result.structured_content
    assert sc["status"] == "SUCCESS"
    assert sc["resource_uri"] == f"pixazo://generations/{sc['id']}/image"
    served = sim.image_bytes(sc["image_url"])
    (row,) = rows(settings.db_path)
    kept = (settings.image_dir / row["image_path"]).read_bytes()
    assert row["image_bytes"] == len(kept)
    assert row["image_sha256"] == hashlib.sha256(kept).hexdigest()
    assert row["image_mime"] == "image/png"
    assert without_xmp(kept) == served  # as served, with its provenance packet (test_provenance.py)
    assert not [p for p in stored_files(settings) if p.name.endswith(".tmp")]


async def test_the_result_carries_text_a_resource_link_and_a_thumbnail(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    result = await generate(settings, width=1536, height=1024)
    kinds = [c.type for c in result.content]
    assert kinds == ["text", "resource_link", "image"]
    link = result.content[1]
    assert link.uri == result.structured_content["resource_uri"]
    thumb = result.content[2]
    assert thumb.mime_type == "image/jpeg"
    data = base64.b64decode(thumb.data)
    assert len(data) <= 200 * 1024
    with Image.open(io.BytesIO(data)) as img:
        assert max(img.size) <= 512
        assert img.format == "JPEG"


async def test_the_largest_noisy_image_is_thumbnailed_under_the_limits(tmp_path: Path) -> None:
    from app.storage.renditions import make_thumbnail

    # 1536 x 1536 is the largest a model makes; pure noise is the worst case for the JPEG's size.
    noisy = Image.merge("RGB", [Image.effect_noise((1536, 1152), 120) for _ in range(3)])
    out = io.BytesIO()
    noisy.save(out, format="PNG", compress_level=1)
    thumb = make_thumbnail(out.getvalue())
    assert len(thumb) <= 200 * 1024
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.size == (512, 384)


@pytest.mark.parametrize(("mode", "kinds"), [("none", ["text", "resource_link"]),
                                             ("full", ["text", "resource_link", "image"])])
async def test_inline_image_setting(tmp_path: Path, sim: Simulator, mode: str, kinds: list[str]) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image=mode)
    result = await generate(settings)
    assert [c.type for c in result.content] == kinds
    if mode == "full":
        served = sim.image_bytes(result.structured_content["image_url"])
        assert without_xmp(base64.b64decode(result.content[2].data)) == served
        assert result.content[2].mime_type == "image/png"


async def test_resources_give_the_row_and_the_exact_image_bytes(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a harbour", "team": "x"})
        gen_id = result.structured_content["id"]
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        image = await client.read_resource(f"pixazo://generations/{gen_id}/image")
        record = await client.read_resource(f"pixazo://generations/{gen_id}")
        with pytest.raises(MCPError, match="No generation with id 999"):
            await client.read_resource("pixazo://generations/999")
    assert {"pixazo://generations/{id}", "pixazo://generations/{id}/image"} <= templates
    (blob,) = image.contents
    assert blob.mime_type == "image/png"
    served = sim.image_bytes(result.structured_content["image_url"])
    assert without_xmp(base64.b64decode(blob.blob)) == served
    (text,) = record.contents
    assert text.mime_type == "application/json"
    row = json.loads(text.text)
    assert row["prompt"] == "a harbour"
    assert row["parameters"]["team"] == "x"
    assert "image_path" not in row


async def test_the_image_route_serves_the_stored_file_with_a_long_cache(live: LiveServer, sim: Simulator) -> None:
    async with http_client(live) as client:
        result = await client.call_tool("pix_generate", {"prompt": "served"})
    gen_id = result.structured_content["id"]
    async with httpx2.AsyncClient() as http:
        resp = await http.get(f"{live.url}/images/{gen_id}")
        missing = await http.get(f"{live.url}/images/99999")
        bogus = await http.get(f"{live.url}/images/..%2Fpixazo.db")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert "max-age=31536000" in resp.headers["cache-control"]
    assert without_xmp(resp.content) == sim.image_bytes(result.structured_content["image_url"])
    assert missing.status_code == 404
    assert bogus.status_code == 404
