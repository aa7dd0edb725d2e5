"""Keeping generated images: safe streamed downloads into a BlobStore, and thumbnails.

A download goes only to allowed hosts, over https (plain http only to a loopback host that is named
explicitly, as tests do), follows no redirect off those hosts, and streams into storage as it
arrives: hashed on the way, stopped at the byte cap mid-stream, its type and pixel size read from the
header before anything is stored or decoded, a PNG checked for its end. The whole image is never in
memory. Names are made here. Thumbnails are decoded in a small pool, from the stored file for a local
backend or from a local spool for a remote one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from PIL import Image

from app.errors import BlobNotFoundError, BlobStoreError, DownloadError
from app.net import is_loopback
from app.storage.blobs import BlobStore, LocalBlobStore, check_key
from app.storage.credentials import ContentCredentials, SigningError
from app.storage.imagetype import MAX_HEADER_BYTES, PNG_END, ImageHeader, check_end, sniff
from app.storage.provenance import Marked, Provenance, written, xmp_packet
from app.storage.renditions import RenditionError, make_display, make_thumbnail

logger = logging.getLogger(__name__)
_Source = TypeVar("_Source")
_Made = TypeVar("_Made")

MAX_REDIRECTS = 3
# What a failed decode looks like: libvips' (renditions) and Pillow's (a mask; a damaged file, or one
# over MAX_IMAGE_PIXELS).
DECODE_ERRORS = (RenditionError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class StoredImage:
    name: str  # the key in the BlobStore, made by the server
    size: int
    sha256: str
    mime: str
    thumbnail: bytes | None = None  # made in the same pass when the caller will want it
    provenance: str | None = None  # what it carries (app.storage.provenance.written); None: as it came


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


def thumbnail_key(name: str) -> str:
    return check_key(name.rsplit(".", 1)[0] + ".thumb.jpg")


class _Download:
    """One response body on its way to storage: counted, its header read, its end checked (hashed on the
    way out by provenance.Marked: what is written, packet included, once)."""

    def __init__(self, body: aiohttp.StreamReader, max_bytes: int, max_pixels: int) -> None:
        self._body = body
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._head = b""
        self._tail = b""
        self.size = 0
        self.found: ImageHeader | None = None

    def _count(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise DownloadError(f"the image is larger than the {self._max_bytes}-byte limit")

    async def header(self) -> ImageHeader:
        """Read just enough to know the type and the pixel size, and refuse what is over the caps."""
        buf = bytearray()
        while True:
            found = sniff(bytes(buf))
            if found is not None:
                break
            if len(buf) >= MAX_HEADER_BYTES:
                raise DownloadError("the downloaded file is not an image (no size in its header)")
            chunk = await self._body.readany()
            if not chunk:
                raise DownloadError("the downloaded file is not an image (it ended before its header)")
            self._count(chunk)
            buf += chunk
        if found.pixels > self._max_pixels:
            raise DownloadError(f"the image is {found.width}x{found.height} pixels, over the "
                                f"{self._max_pixels}-pixel limit")
        self._head = bytes(buf)
        self.found = found
        return found

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from its first byte, as it arrives; raises DownloadError mid-stream on a problem."""
        if self.found is None:  # pragma: no cover - header() always runs first
            raise RuntimeError("chunks() before header()")
        found = self.found
        if self._head:
            yield self._head
        last = self._head
        self._head = b""
        while True:
            chunk = await self._body.readany()
            if not chunk:
                break
            self._count(chunk)
            last = chunk if len(chunk) >= len(PNG_END) else (last + chunk)[-len(PNG_END):]
            yield chunk
        check_end(found, last)


class ImageStore:
    def __init__(self, blobs: BlobStore, http: aiohttp.ClientSession, allowed_hosts: list[str], *,
                 max_bytes: int, max_pixels: int, max_downloads: int, pool: Executor,
                 credentials: ContentCredentials | None = None) -> None:
        self.blobs = blobs
        self.credentials = credentials  # C2PA signing, when the team gave a certificate
        self._http = http
        self._allowed = list(allowed_hosts)
        self._max = max_bytes
        self._max_pixels = max_pixels
        # Downloads in progress hold a connection and a write buffer each; calls beyond this wait
        # holding only their URL, so memory follows this number, not the crowd.
        self._downloads = asyncio.Semaphore(max_downloads)
        self._pool = pool
        self._spool: LocalBlobStore | None = None
        # Hears (stage, seconds) for download_wait, download, thumbnail_wait and thumbnail (the metrics).
        self.on_stage: Callable[[str, float], None] = _ignore

    async def aclose(self) -> None:
        if self._spool is not None:
            await asyncio.to_thread(shutil.rmtree, self._spool.root, True)
            self._spool = None

    def _spool_store(self) -> LocalBlobStore:
        """Local scratch space for decoding images that live in a remote backend."""
        if self._spool is None:
            self._spool = LocalBlobStore(Path(tempfile.mkdtemp(prefix="pixazo-spool-")))
        return self._spool

    def path_of(self, name: str) -> Path | None:
        """A local file for the stored image (the local backend), else None: stream it instead."""
        return self.blobs.local_path(check_key(name))

    def stream(self, name: str) -> AsyncIterator[bytes]:
        return self.blobs.stream(check_key(name))

    async def read(self, name: str) -> bytes:
        return await self.blobs.get(check_key(name))

    async def download(self, url: str, gen_id: int, *, with_thumbnail: bool = False, max_pixels: int | None = None,
                       max_bytes: int | None = None, provenance: Provenance | None = None) -> StoredImage:
        """Copy the image at `url` into storage; DownloadError says why it could not be kept.

        `max_pixels` and `max_bytes` replace the store's caps for this image (an upscale's output is
        larger than any generated image); the pixel cap is still read from the header before any decode.
        `provenance`: what the stored image says about itself (its XMP packet, and a signed C2PA manifest
        when this store has credentials); None keeps the bytes as they came.
        """
        queued = time.monotonic()
        async with self._downloads:
            started = time.monotonic()
            self.on_stage("download_wait", started - queued)
            decoding = [0.0]  # the thumbnail's share of the slot's time, told apart
            try:
                return await self._download(url, gen_id, with_thumbnail, max_pixels or self._max_pixels,
                                            max_bytes or self._max, provenance, decoding)
            except TimeoutError:
                raise DownloadError("the image download timed out") from None
            except aiohttp.ClientError as exc:
                raise DownloadError(f"the image download failed ({type(exc).__name__})") from None
            except BlobStoreError as exc:
                raise DownloadError(str(exc)) from None
            finally:
                self.on_stage("download", time.monotonic() - started - decoding[0])

    async def _download(self, url: str, gen_id: int, with_thumbnail: bool, max_pixels: int,
                        max_bytes: int, provenance: Provenance | None, decoding: list[float]) -> StoredImage:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self._allowed)
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
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise DownloadError(f"the image is larger than the {max_bytes}-byte limit")
                return await self._keep(_Download(resp.content, max_bytes, max_pixels), gen_id, with_thumbnail,
                                        provenance, decoding)
        raise DownloadError("the image host redirected too many times")

    async def _keep(self, body: _Download, gen_id: int, with_thumbnail: bool,
                    provenance: Provenance | None, decoding: list[float]) -> StoredImage:
        header = await body.header()
        # Random, not the hash: the name must exist before the last byte (and so the hash) does.
        name = f"{gen_id}-{secrets.token_hex(8)}{header.ext}"
        marked = Marked(body.chunks(), header.format, xmp_packet(provenance) if provenance is not None else None)
        if provenance is not None and self.credentials is not None:
            return await self._keep_signed(marked, header, name, with_thumbnail, provenance, self.credentials,
                                           decoding)
        thumb: bytes | None = None
        local = self.blobs.local_path(name)
        if with_thumbnail and local is None:
            # A remote backend: spool locally, check by decoding, then upload from the spool.
            spool = self._spool_store()
            await self._put_marked(spool, name, marked)
            try:
                thumb = await self._thumbnail_of(spool.local_path(name), decoding)
                await self.blobs.put(name, spool.stream(name))
            finally:
                await spool.delete(name)
        else:
            await self._put_marked(self.blobs, name, marked)
            if with_thumbnail and local is not None:
                try:
                    thumb = await self._thumbnail_of(local, decoding)
                except DownloadError:
                    await self.blobs.delete(name)
                    raise
        return StoredImage(name=name, size=marked.size, sha256=marked.hash.hexdigest(), mime=header.mime,
                           thumbnail=thumb, provenance=written(marked.wrote_xmp, False) if provenance else None)

    @staticmethod
    async def _put_marked(store: BlobStore, name: str, marked: Marked) -> None:
        try:
            await store.put(name, marked)
        except ValueError:  # the header check passed these bytes, so this is a damaged start
            raise DownloadError("the downloaded file is not a valid image (a damaged header)") from None

    async def _keep_signed(self, marked: Marked, header: ImageHeader, name: str, with_thumbnail: bool,
                           provenance: Provenance, credentials: ContentCredentials,
                           decoding: list[float]) -> StoredImage:
        """Spool the image (XMP already in), sign a copy in the image pool, and keep the signed copy; a
        signing failure keeps the unsigned one and says why in `provenance`, never loses the image."""
        spool = self._spool_store()
        signed_name = f"{name.split('-', 1)[0]}-{secrets.token_hex(8)}{header.ext}"
        parent_name: str | None = None
        await self._put_marked(spool, name, marked)
        try:
            parent = await self._parent_file(provenance, spool)
            if parent is not None and parent.parent == spool.root:
                parent_name = parent.name
            loop = asyncio.get_running_loop()
            failure: str | None = None
            try:
                size, digest = await loop.run_in_executor(
                    self._pool, _sign_and_hash, credentials, spool.local_path(name), spool.local_path(signed_name),
                    header.mime, provenance, parent)
                kept = signed_name
            except SigningError as exc:
                failure = str(exc)
                logger.warning("generation %s: C2PA signing failed, the image is kept unsigned: %s",
                               provenance.generation_id, failure)
                size, digest, kept = marked.size, marked.hash.hexdigest(), name
            thumb = await self._thumbnail_of(spool.local_path(kept), decoding) if with_thumbnail else None
            await self.blobs.put(name, spool.stream(kept))
        finally:
            for leftover in (name, signed_name, parent_name):
                if leftover is not None:
                    await spool.delete(leftover)
        return StoredImage(name=name, size=size, sha256=digest, mime=header.mime, thumbnail=thumb,
                           provenance=written(marked.wrote_xmp, failure is None, failure))

    async def _parent_file(self, provenance: Provenance, spool: LocalBlobStore) -> Path | None:
        """A local file of the edit's input image, for its ingredient: the stored file itself, or a spooled
        copy from a remote backend; None when there is none (then the manifest names no parent)."""
        if not provenance.edit or provenance.parent is None:
            return None
        try:
            key = check_key(provenance.parent.name)
            local = self.blobs.local_path(key)
            if local is not None:
                return local if await asyncio.to_thread(local.is_file) else None
            # A name of its own: another edit of the same parent may be spooling it at the same time.
            copy = f"{key.split('-', 1)[0]}-{secrets.token_hex(8)}{Path(key).suffix}"
            await spool.put(copy, self.blobs.stream(key), durable=False)
            return spool.local_path(copy)
        except BlobStoreError:  # gone, or unreadable: the edit is signed without its ingredient
            logger.warning("generation %s: its parent image could not be read for its C2PA ingredient",
                           provenance.generation_id)
            return None

    async def _thumbnail_of(self, path: Path, decoding: list[float]) -> bytes:
        """The thumbnail of a download (the decode that checks it); the time it took goes to `decoding`."""
        started = time.monotonic()
        try:
            return await self.in_pool(make_thumbnail, path)
        except DECODE_ERRORS:
            raise DownloadError("the downloaded file is not a valid image (it does not decode)") from None
        finally:
            decoding[0] += time.monotonic() - started

    async def in_pool(self, make: Callable[[_Source], _Made], source: _Source) -> _Made:
        """`make(source)` in the image pool, its wait for a thread and its run told to on_stage."""
        queued = time.monotonic()

        def timed() -> tuple[_Made, float, float]:
            started = time.monotonic()
            made = make(source)
            return made, started - queued, time.monotonic() - started

        made, waited, ran = await asyncio.get_running_loop().run_in_executor(self._pool, timed)
        self.on_stage("thumbnail_wait", waited)
        self.on_stage("thumbnail", ran)
        return made

    async def thumbnail(self, name: str) -> bytes:
        """The cached thumbnail of a stored image, made once (on its first view)."""
        key = thumbnail_key(name)
        try:
            return await self.blobs.get(key)
        except BlobNotFoundError:
            pass
        local = self.blobs.local_path(name)
        if local is not None:
            data = await self.in_pool(make_thumbnail, local)
        else:
            spool = self._spool_store()
            await spool.put(name, self.blobs.stream(name), durable=False)
            try:
                data = await self.in_pool(make_thumbnail, spool.local_path(name))
            finally:
                await spool.delete(name)
        # A cache: a full disk costs a later view another decode, nothing more.
        with contextlib.suppress(BlobStoreError):
            await self.blobs.put(key, _one(data), durable=False)
        return data


    @property
    def pool(self) -> Executor:
        """The threads that decode images (never the event loop)."""
        return self._pool

    async def display(self, name: str) -> tuple[bytes, str]:
        """The in-chat app's rendition of a stored image (make_display), made in the image pool."""
        data = await self.read(name)
        return await asyncio.get_running_loop().run_in_executor(self._pool, make_display, data)

    async def keep_bytes(self, data: bytes, gen_id: int, ext: str, mime: str) -> StoredImage:
        """Store an image the server was given (not downloaded): a mask painted in the app."""
        name = f"{gen_id}-{secrets.token_hex(8)}{ext}"
        await self.blobs.put(name, _one(data))
        return StoredImage(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), mime=mime)


def _sign_and_hash(credentials: ContentCredentials, source: Path, dest: Path, mime: str, provenance: Provenance,
                   parent: Path | None) -> tuple[int, str]:
    """Sign, then hash what was written (one trip to the pool): (size, sha256)."""
    credentials.sign_file(source, dest, mime, provenance, parent)
    digest = hashlib.sha256()
    size = 0
    with open(dest, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def _ignore(stage: str, seconds: float) -> None:
    pass


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
