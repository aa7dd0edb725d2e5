"""The only file writer: downloads generated images into local storage, safely, and makes thumbnails.

A download goes only to allowed hosts, over https (plain http only to a loopback host that is named
explicitly, as tests do), follows no redirect off those hosts, stops at the size cap while streaming,
checks the type from the bytes (Pillow), names files itself and writes them atomically.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from PIL import Image, UnidentifiedImageError

from app.errors import DownloadError
from app.net import is_loopback

# Pillow format -> (MIME type, file extension). Pixazo serves PNG; the others are accepted in case.
ALLOWED_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", ".png"),
    "JPEG": ("image/jpeg", ".jpg"),
    "WEBP": ("image/webp", ".webp"),
}
MAX_REDIRECTS = 3
THUMB_MAX_SIDE = 512
THUMB_MAX_BYTES = 200 * 1024
THUMB_MIME = "image/jpeg"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class StoredImage:
    name: str  # a file name inside the image directory, made by the server
    size: int
    sha256: str
    mime: str
    thumbnail: bytes | None = None  # made in the same pass when the caller will want it


def host_allowed(host: str, patterns: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def check_url(url: str, patterns: list[str]) -> None:
    """Raise DownloadError unless the URL may be fetched."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or not host_allowed(host, patterns):
        raise DownloadError(f"the image host {host or '(none)'} is not on the allowed list")
    if parts.scheme == "https":
        return
    # Plain http only for a loopback host that the operator named explicitly (no wildcard).
    if parts.scheme == "http" and is_loopback(host) and host.lower() in [p.lower() for p in patterns]:
        return
    raise DownloadError(f"the image URL uses {parts.scheme or 'no'} scheme; only https is allowed")


def _decode(data: bytes) -> tuple[Image.Image, str, str]:
    """Decode the bytes fully (which checks them) and tell (image, mime, extension) from what they
    are, whatever the server's Content-Type said."""
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format or ""
        if fmt not in ALLOWED_FORMATS:
            raise DownloadError(f"the downloaded file is a {fmt} image, which is not accepted")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise DownloadError("the downloaded file is not an image") from None
    mime, ext = ALLOWED_FORMATS[fmt]
    return img, mime, ext


_tmp_names = itertools.count()
STORED_NAME = re.compile(r"[0-9]{1,18}-[0-9a-f]{16}(\.thumb)?\.(png|jpg|webp)")


def _write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temporary file, fsync (for images; a thumbnail is a cache and can be made again), rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_names)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_thumbnail(source: bytes | Image.Image) -> bytes:
    """A JPEG at most THUMB_MAX_SIDE px on its long side and at most THUMB_MAX_BYTES."""
    if isinstance(source, Image.Image):
        rgb = source.convert("RGB")
    else:
        with Image.open(io.BytesIO(source)) as img:
            rgb = img.convert("RGB")
    side = THUMB_MAX_SIDE
    while True:
        thumb = rgb.copy()
        thumb.thumbnail((side, side))
        for quality in (80, 65, 50, 35):
            out = io.BytesIO()
            thumb.save(out, format="JPEG", quality=quality)
            if out.tell() <= THUMB_MAX_BYTES:
                return out.getvalue()
        side //= 2


class ImageStore:
    def __init__(self, root: Path, http: aiohttp.ClientSession, allowed_hosts: list[str], max_bytes: int) -> None:
        self.root = root
        self._http = http
        self._allowed = list(allowed_hosts)
        self._max = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def path_of(self, name: str) -> Path:
        # Names come from our own rows, but check the shape anyway: nothing outside root, ever.
        if not STORED_NAME.fullmatch(name):
            raise DownloadError("invalid stored image name")
        return self.root / name

    async def download(self, url: str, gen_id: int, *, with_thumbnail: bool = False) -> StoredImage:
        data = await self._fetch(url)
        # One trip to a worker thread for everything that touches the bytes or the disk.
        return await asyncio.to_thread(self._store, data, gen_id, with_thumbnail)

    async def _fetch(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self._allowed)
            try:
                # The session's own timeouts apply (see app.core.state.http_session).
                async with self._http.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        location = resp.headers.get("Location")
                        if not location:
                            raise DownloadError("the image host redirected without a location")
                        url = urljoin(url, location)
                        continue
                    if resp.status != 200:
                        raise DownloadError(f"the image host answered HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > self._max:
                        raise DownloadError(f"the image is larger than the {self._max}-byte limit")
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        buf += chunk
                        if len(buf) > self._max:
                            raise DownloadError(f"the image is larger than the {self._max}-byte limit")
                    return bytes(buf)
            except TimeoutError:
                raise DownloadError("the image download timed out") from None
            except aiohttp.ClientError as exc:
                raise DownloadError(f"the image download failed ({type(exc).__name__})") from None
        raise DownloadError("the image host redirected too many times")

    def _store(self, data: bytes, gen_id: int, with_thumbnail: bool) -> StoredImage:
        img, mime, ext = _decode(data)
        digest = hashlib.sha256(data).hexdigest()
        name = f"{gen_id}-{digest[:16]}{ext}"
        _write_atomic(self.root / name, data)
        # The inline thumbnail is made from the image already decoded; the gallery's cached copy is
        # written on its first view instead (most generations are never browsed).
        thumb = make_thumbnail(img) if with_thumbnail else None
        img.close()
        return StoredImage(name=name, size=len(data), sha256=digest, mime=mime, thumbnail=thumb)

    def _thumb_path(self, name: str) -> Path:
        return self.root / (name.rsplit(".", 1)[0] + ".thumb.jpg")

    async def read(self, name: str) -> bytes:
        return await asyncio.to_thread(self.path_of(name).read_bytes)

    async def thumbnail(self, name: str) -> bytes:
        """The cached thumbnail of a stored image, made once."""
        return await asyncio.to_thread(self._thumbnail, name)

    def _thumbnail(self, name: str) -> bytes:
        source = self.path_of(name)
        thumb = self._thumb_path(name)
        try:
            return thumb.read_bytes()
        except FileNotFoundError:
            data = make_thumbnail(source.read_bytes())
            _write_atomic(thumb, data, durable=False)
            return data
