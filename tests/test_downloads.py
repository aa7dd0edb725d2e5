"""Real-size images kept safely: streamed, capped in bytes and pixels, and never lost to a disk error."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from PIL import Image

from app.errors import DownloadError
from app.pixazo.simulator import Fault, Simulator
from app.settings import Settings
from app.storage.blobs import LocalBlobStore
from app.storage.images import ImageStore
from app.storage.imagetype import check_end, sniff
from app.storage.renditions import decode_limit
from tests.conftest import TEST_KEY, in_memory_client, live_server, make_settings, rows, small_filesystem, without_xmp


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


async def generate(settings: Settings, **arguments: Any) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool("pix_generate", {"prompt": "a castle", **arguments})


def assert_download_failed(result: Any, settings: Settings, url: str, reason: str) -> None:
    """A paid image that could not be kept: not an error, the URL and the reason, no retry advice."""
    assert not result.is_error
    text = result.content[0].text
    assert url in text
    assert reason in text
    assert "try again" not in text.lower()
    assert result.structured_content["status"] == "DOWNLOAD_FAILED"
    (row,) = rows(settings.db_path)
    assert row["status"] == "DOWNLOAD_FAILED"
    assert row["image_url"] == url
    assert reason in row["error"]
    assert row["image_path"] is None


# --- the simulator serves real images -------------------------------------------------------------

@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (768, 1344)])
async def test_the_simulator_serves_real_size_pngs_at_the_requested_size(
        sim: Simulator, width: int, height: int) -> None:
    async with aiohttp.ClientSession() as http:
        answers = []
        for prompt in ("one", "two"):
            async with http.post(sim.url + "/getImage/v1/getSDXLImage", headers={"Ocp-Apim-Subscription-Key":
                                 "test-key-0123456789"}, json={"prompt": prompt, "width": width,
                                                               "height": height}) as resp:
                url = (await resp.json())["imageUrl"]
            async with http.get(url) as resp:
                assert resp.status == 200
                answers.append(await resp.read())
    first, second = answers
    assert first != second  # each request's image is its own
    assert second == sim.image_bytes(url)
    with Image.open(io.BytesIO(first)) as img:
        img.load()  # a full decode: every chunk's CRC and the zlib stream are checked
        assert img.size == (width, height)
        assert img.format == "PNG"
    if (width, height) == (1024, 1024):
        assert 1_000_000 <= len(first) <= 2_000_000
    # The per-request chunk sits just before IEND and carries a correct CRC.
    assert first.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82")
    text_at = first.rindex(b"tEXt") - 4
    (length,) = struct.unpack(">I", first[text_at:text_at + 4])
    body = first[text_at + 4:text_at + 8 + length]
    assert struct.unpack(">I", first[text_at + 8 + length:text_at + 12 + length])[0] == zlib.crc32(body)


# --- the type and size from the header -------------------------------------------------------------

def encoded(fmt: str, size: tuple[int, int], **options: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "options", "mime"), [
    ("PNG", {}, "image/png"),
    ("JPEG", {}, "image/jpeg"),
    ("JPEG", {"progressive": True, "exif": b"Exif\0\0" + b"\0" * 5000}, "image/jpeg"),
    ("WEBP", {"lossless": False}, "image/webp"),
    ("WEBP", {"lossless": True}, "image/webp"),
    ("WEBP", {"lossless": False, "exif": b"Exif\0\0" + b"\0" * 100}, "image/webp"),  # VP8X
])
def test_the_header_gives_type_and_size_without_a_decode(fmt: str, options: dict[str, Any], mime: str) -> None:
    data = encoded(fmt, (1000, 600), **options)
    for cut in (1, 8, 20):  # too little to tell: ask for more
        assert sniff(data[:cut]) is None
    found = sniff(data)
    assert found is not None
    assert (found.mime, found.width, found.height) == (mime, 1000, 600)


@pytest.mark.parametrize("data", [b"<html>denied</html>", b"GIF89a" + b"\0" * 40, b"RIFF\0\0\0\0WAVEfmt " + b"\0" * 20,
                                  b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"\xff\xd8\xff\xda" + b"\0" * 30])
def test_anything_else_is_not_an_image(data: bytes) -> None:
    with pytest.raises(DownloadError, match="not an image"):
        sniff(data)


def test_a_png_must_end_with_iend() -> None:
    data = encoded("PNG", (64, 64))
    header = sniff(data)
    assert header is not None
    check_end(header, data[-12:])
    with pytest.raises(DownloadError, match="incomplete"):
        check_end(header, data[-13:-1])


# --- downloads ---------------------------------------------------------------------------------------

async def test_an_image_over_the_byte_cap_is_refused_mid_stream_with_no_file(tmp_path: Path,
                                                                            sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_image_bytes=1_000_000)
    url = f"{sim.url}/_sim/big.png?bytes={200_000_000}"
    sim.push(Fault(kind="url", body=url))
    result = await generate(settings)
    assert_download_failed(result, settings, url, "larger than the 1000000-byte limit")
    assert files_in(settings.image_dir) == []
    # The download stopped near the cap: the simulator never got to send the other 199 MB.
    assert sim.stats.big_bytes_sent < 20_000_000


def peak_rss_reset() -> None:
    """Reset this process's peak RSS (VmHWM), so the next reading is about what follows."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


async def test_a_small_png_with_huge_dimensions_is_refused_from_its_header(tmp_path: Path,
                                                                          sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    url = f"{sim.url}/_sim/huge.png?side=12000"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert len(await resp.read()) < 600_000  # about 440 KB that would decode to 432 MB
    sim.push(Fault(kind="url", body=url))
    peak_rss_reset()
    before = rss_kb("VmRSS")
    result = await generate(settings)
    grown_kb = rss_kb("VmHWM") - before
    assert_download_failed(result, settings, url, "12000x12000 pixels, over the 2359296-pixel limit")
    assert files_in(settings.image_dir) == []
    assert grown_kb < 100_000, grown_kb  # a decode would have taken 432 MB


async def test_a_png_cut_short_is_refused_with_no_file(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    url = f"{sim.url}/_sim/cut.png?drop=5"
    sim.push(Fault(kind="url", body=url))
    result = await generate(settings, width=1024, height=1024)
    assert_download_failed(result, settings, url, "incomplete")
    assert files_in(settings.image_dir) == []


async def test_the_pixel_cap_is_a_setting_and_pillows_guard_matches_it(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, max_image_pixels=512 * 512, max_edit_pixels=600 * 600)
    before = Image.MAX_IMAGE_PIXELS
    try:
        result = await generate(settings, width=768, height=768)
        # The decompression-bomb guard of any other decode: the larger cap (the editing tools' images
        # are decoded for thumbnails too).
        assert Image.MAX_IMAGE_PIXELS == 600 * 600
        assert decode_limit() == 600 * 600
    finally:
        Image.MAX_IMAGE_PIXELS = before  # process-wide: later tests decode without a server
    assert "768x768 pixels, over the 262144-pixel limit" in result.content[0].text
    assert files_in(settings.image_dir) == []


@pytest.mark.parametrize("inline", ["thumbnail", "none"])
async def test_a_full_image_directory_gives_download_failed_with_the_url_and_no_file(
        tmp_path: Path, sim: Simulator, inline: str) -> None:
    with small_filesystem(tmp_path / "images", 300) as image_dir:
        settings = make_settings(tmp_path, sim.url, image_dir=image_dir, inline_image=inline)
        result = await generate(settings, width=1024, height=1024)
        url = rows(settings.db_path)[0]["image_url"]
        assert_download_failed(result, settings, url, "No space left on device")
        assert os.listdir(image_dir) == []


async def test_a_read_only_image_directory_gives_download_failed_with_the_url(tmp_path: Path,
                                                                              sim: Simulator) -> None:
    with small_filesystem(tmp_path / "images", 300, read_only=True) as image_dir:
        settings = make_settings(tmp_path, sim.url, image_dir=image_dir)
        result = await generate(settings)
        url = rows(settings.db_path)[0]["image_url"]
        assert_download_failed(result, settings, url, "Read-only file system")
        assert os.listdir(image_dir) == []


async def test_a_real_size_image_is_kept_whole_with_its_hash(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url)
    result = await generate(settings, width=768, height=1344)
    assert result.structured_content["status"] == "SUCCESS"
    (row,) = rows(settings.db_path)
    served = sim.image_bytes(row["image_url"])
    kept = (settings.image_dir / row["image_path"]).read_bytes()
    assert without_xmp(kept) == served  # as served, with the provenance packet put in (test_provenance.py)
    assert row["image_sha256"] == hashlib.sha256(kept).hexdigest()
    assert files_in(settings.image_dir) == [row["image_path"]]


async def test_healthz_reports_image_storage_that_cannot_be_written(tmp_path: Path, sim: Simulator) -> None:
    async with live_server(make_settings(tmp_path / "good", sim.url)) as live, httpx2.AsyncClient() as http:
        good = (await http.get(live.url + "/healthz")).json()
    assert (good["status"], good["image_storage"]) == ("ok", "ok")
    with small_filesystem(tmp_path / "images", 300, read_only=True) as image_dir:
        settings = make_settings(tmp_path, sim.url, image_dir=image_dir)
        async with live_server(settings) as live, httpx2.AsyncClient() as http:
            resp = await http.get(live.url + "/healthz")
    assert resp.status_code == 200  # degraded, not down: calls still answer with Pixazo's URL
    assert resp.json()["status"] == "degraded"
    assert "Read-only file system" in resp.json()["image_storage"]


class RemoteLike:
    """A BlobStore that offers no local file, as an object store would: readers must stream or spool.
    (Bytes live in a local directory underneath; only the interface matters here.)"""

    def __init__(self, root: Path) -> None:
        self.inner = LocalBlobStore(root)
        self.puts: list[str] = []

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, durable: bool = True) -> int:
        self.puts.append(key)
        return await self.inner.put(key, chunks, durable=durable)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    def stream(self, key: str) -> AsyncIterator[bytes]:
        return self.inner.stream(key)

    async def size(self, key: str) -> int | None:
        return await self.inner.size(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def check(self) -> None:
        await self.inner.check()

    def local_path(self, key: str) -> Path | None:
        return None


async def test_a_remote_backend_gets_the_image_and_thumbnails_come_from_a_spool(tmp_path: Path,
                                                                                sim: Simulator) -> None:
    remote = RemoteLike(tmp_path / "bucket")
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.url + "/getImage/v1/getSDXLImage", headers={"Ocp-Apim-Subscription-Key": TEST_KEY},
                             json={"prompt": "p", "width": 1024, "height": 1024}) as resp:
            url = (await resp.json())["imageUrl"]
        with ThreadPoolExecutor(2) as pool:
            images = ImageStore(remote, http, ["127.0.0.1"], max_bytes=5_000_000, max_pixels=1536 * 1536,
                                max_downloads=4, pool=pool)
            try:
                stored = await images.download(url, 7, with_thumbnail=True)
                assert await remote.get(stored.name) == sim.image_bytes(url)
                assert stored.thumbnail is not None
                with Image.open(io.BytesIO(stored.thumbnail)) as thumb:
                    assert thumb.size == (512, 512)
                spool = images._spool_store().root  # where remote images are decoded: must be left empty
                assert os.listdir(spool) == []
                assert images.path_of(stored.name) is None
                assert b"".join([c async for c in images.stream(stored.name)]) == sim.image_bytes(url)
                gallery_thumb = await images.thumbnail(stored.name)  # made from a spool, then cached remotely
                assert await remote.get(stored.name.rsplit(".", 1)[0] + ".thumb.jpg") == gallery_thumb
                assert os.listdir(spool) == []
            finally:
                await images.aclose()
    assert sorted(os.listdir(tmp_path / "bucket")) == sorted([stored.name, stored.name[:-4] + ".thumb.jpg"])
