"""The caller's own images: one-time upload links, data: URIs, ChatGPT's file links, the app's uploads.

Each becomes a generation of its own (operation `upload`, cost 0, the caller's), kept and thumbnailed
like any image, that every image argument then takes by its id; Pixazo fetches it through the signed
links that exist for stored images. A link's token is 32 random bytes, kept only as its sha256,
single-use, bound to the caller who asked for it, alive PIXAZO_UPLOAD_LINK_TTL_S; its row is PENDING
until the bytes arrive, or EXPIRED (the lease tick) once the link has expired unused.

What is accepted is decided by the bytes, never by a declared type: a PNG, JPEG or WebP (415
otherwise, known from the first bytes), at most PIXAZO_MAX_UPLOAD_BYTES (413 as soon as the stream
passes it), at most the edit cap in pixels and decoding whole (422). A refused upload leaves nothing:
no blob, the row still PENDING, and the link usable again until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from app.core.service import SUCCESS, GenerationService
from app.errors import DownloadError
from app.outbound import outbound_session
from app.settings import Settings
from app.storage.images import DECODE_ERRORS, thumbnail_key
from app.storage.imagetype import MAX_HEADER_BYTES, ImageHeader, sniff
from app.storage.records import PENDING, Generation
from app.storage.renditions import make_thumbnail
from app.storage.rows import CallMeta

UPLOAD = "upload"
DEAD_LINK = "This upload link has expired, was already used or was cancelled. Ask for a new one."
UPLOAD_PATH = "/upload/{token}"
FETCH_TIMEOUT_S = 30.0


class UploadError(Exception):
    """An upload refused, with the HTTP status that says why and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    generation: Generation
    token: str
    expires_at: float


class Uploads:
    """Creates links, receives their bytes, and keeps images the caller holds (data: URIs, files)."""

    def __init__(self, settings: Settings, service: GenerationService) -> None:
        self.settings = settings
        self.service = service
        self.max_bytes = settings.max_upload_bytes

    async def create_link(self, caller: str | None) -> Link | str:
        """A new link and its PENDING row; or why not (the caller's limits), as a message."""
        store = self.service.store
        open_links = await store.open_upload_links(caller)
        if open_links >= self.settings.max_open_upload_links_per_caller:
            return (f"This caller already has {open_links} unused upload links (the most one caller may hold, "
                    "PIXAZO_MAX_OPEN_UPLOAD_LINKS_PER_CALLER); use one, or wait for them to expire.")
        row, refusal = await self.service.limits.record(
            "an image the caller uploads", {}, caller, CallMeta(UPLOAD, UPLOAD, None, 0.0))
        if refusal is not None:
            return refusal.message
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self.settings.upload_link_ttl_s
        await store.add_upload_link(digest(token), row.id, caller, expires_at)
        return Link(row, token, expires_at)

    async def live(self, token: str) -> bool:
        """Whether the link would take a file now (for its page: a dead link says so before a file is picked)."""
        return await self.service.store.upload_link_live(digest(token), time.time())

    async def receive(self, token: str, chunks: AsyncIterator[bytes]) -> Generation:
        """The bytes for a link: checked as they stream, kept, the row SUCCESS. Raises UploadError."""
        store = self.service.store
        key = digest(token)
        claimed = await store.claim_upload_link(key, time.time())
        if claimed is None:
            raise UploadError(410, DEAD_LINK)
        gen_id, _caller = claimed
        try:
            data = await self._read(chunks)
            return await self._keep(gen_id, data)
        except BaseException:
            await store.release_upload_link(key)  # nothing kept: the link may be used again while it lives
            raise

    async def _read(self, chunks: AsyncIterator[bytes]) -> bytes:
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > self.max_bytes:
                raise UploadError(413, f"The image is larger than {self.max_bytes} bytes.")
            if len(data) <= MAX_HEADER_BYTES:
                self._sniff(bytes(data), final=False)  # 415 as soon as the first bytes tell
        return bytes(data)

    def _sniff(self, data: bytes, *, final: bool) -> ImageHeader | None:
        try:
            found = sniff(data)
        except DownloadError:
            raise UploadError(415, "Only PNG, JPEG or WebP images are accepted (judged by the file's bytes).") from None
        if found is None and final:
            raise UploadError(415, "Only PNG, JPEG or WebP images are accepted (the file ends before its header).")
        return found

    async def _check(self, data: bytes) -> tuple[ImageHeader, bytes]:
        """The image's header and its thumbnail, or UploadError: a PNG, JPEG or WebP within the caps
        that decodes whole."""
        header = self._sniff(data[:MAX_HEADER_BYTES], final=True)
        assert header is not None  # noqa: S101 - final=True raises instead
        if header.pixels > self.settings.max_edit_pixels:
            raise UploadError(422, f"The image is {header.width}x{header.height} pixels, over the "
                                   f"{self.settings.max_edit_pixels}-pixel limit.")
        try:
            thumb = await self.service.images.in_pool(make_thumbnail, data)
        except DECODE_ERRORS:
            raise UploadError(422, "The file is not a readable image (it does not decode).") from None
        return header, thumb

    async def _keep(self, gen_id: int, data: bytes, checked: tuple[ImageHeader, bytes] | None = None) -> Generation:
        header, thumb = checked or await self._check(data)
        images = self.service.images
        stored = await images.keep_bytes(data, gen_id, header.ext, header.mime)
        await images.blobs.put(thumbnail_key(stored.name), _one(thumb), durable=False)
        return await self.service.store.finish(gen_id, SUCCESS, image=stored, duration_ms=0, attempts=0, cost_usd=0.0)

    async def keep(self, data: bytes, caller: str | None, source: str) -> Generation:
        """An image the caller holds (a data: URI, a downloaded file, the app's upload), checked and then
        kept as an upload row (a refused one leaves no row); raises UploadError."""
        if len(data) > self.max_bytes:
            raise UploadError(413, f"The image is larger than {self.max_bytes} bytes.")
        checked = await self._check(data)
        row = await self.service.store.insert_pending(f"an image the caller brought ({source})", {"source": source},
                                                      caller, meta=CallMeta(UPLOAD, UPLOAD, None, 0.0))
        return await self._keep(row.id, data, checked)

    async def from_data_uri(self, uri: str, caller: str | None) -> Generation:
        head, sep, payload = uri.partition(",")
        if not sep or not head.startswith("data:") or not head.endswith(";base64"):
            raise UploadError(415, "a data: URI must be base64 (data:image/png;base64,...)")
        return await self.from_base64(payload, caller, "data URI")

    async def from_base64(self, payload: str, caller: str | None, source: str) -> Generation:
        """Base64 bytes the caller holds (a data: URI's, the app's file), kept as by `keep`; too long a
        text is refused before it is decoded."""
        if len(payload) > self.max_bytes * 4 // 3 + 4:
            raise UploadError(413, f"The image is larger than {self.max_bytes} bytes.")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise UploadError(415, "The image is not valid base64.") from None
        return await self.keep(data, caller, source)

    async def from_file_link(self, url: str, caller: str | None) -> Generation:
        """A file ChatGPT hands over (`download_url`): fetched under the outbound rules, then kept."""
        return await self.keep(await self._download(url), caller, "ChatGPT file")

    async def _download(self, url: str) -> bytes:
        if not url.startswith("https://"):
            raise UploadError(415, "a file's download_url must be https")
        # No redirects: a public name must not hand us to a private one.
        try:
            async with (
                outbound_session(self.settings.oauth_metadata_loopback_hosts, self.settings.oauth_ca_file,
                                 FETCH_TIMEOUT_S) as http,
                http.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise UploadError(422, f"the file's download_url answered HTTP {response.status}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise UploadError(413, f"the file is larger than {self.max_bytes} bytes")
                return bytes(data)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise UploadError(422, f"the file could not be fetched ({type(exc).__name__})") from None


def is_file_param(value: Any) -> bool:
    """ChatGPT's file argument: an object with a download_url."""
    return isinstance(value, dict) and isinstance(value.get("download_url"), str)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = ["PENDING", "UPLOAD", "UPLOAD_PATH", "Link", "UploadError", "Uploads", "is_file_param"]
