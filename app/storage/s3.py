"""Images in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, R2...): the BlobStore for
`PIXAZO_IMAGE_STORE=s3://BUCKET/PREFIX`.

A put streams: the first part is buffered (S3 wants every part but the last to be at least 5 MiB, and
a single PUT needs its length up front); an image that fits in it goes up as one PutObject, a larger
one as a multipart upload fed part by part as the bytes arrive, so memory stays at one part per
upload. A multipart upload that fails or is cancelled is aborted, shielded from the cancellation,
so no half-written object and no orphaned parts are left behind. Reads stream the object's body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from app.errors import BlobNotFoundError, BlobStoreError
from app.storage.blobs import check_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

    from app.settings import Settings

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3's floor is 5 MiB for every part but the last
READ_CHUNK = 64 * 1024
HEALTH_KEY = ".pixazo-healthz"
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without slashes at either end; may be empty

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://BUCKET/PREFIX` -> S3Location; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"not an s3://BUCKET/PREFIX URL: {url!r}")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, name: str) -> str:
        """The object key of a stored name (only server-made names, as in every backend)."""
        return self.under_prefix(check_key(name))

    def under_prefix(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name


def _error(action: str, key: str, exc: BaseException) -> BlobStoreError:
    """One message for operators: what failed and the store's error code, never credentials."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        return BlobStoreError(f"the image store refused to {action} {key} ({code})")
    return BlobStoreError(f"the image store could not {action} {key} ({type(exc).__name__})")


def _not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in NOT_FOUND_CODES or status == 404


FAILURES = (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError)


async def _parts(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup a stream of chunks into parts of `size` bytes (the last one shorter)."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class S3BlobStore:
    """BlobStore on one bucket and prefix. Build it with `S3BlobStore.open` (which owns the client)."""

    def __init__(self, client: S3Client, location: S3Location, part_size: int = PART_SIZE) -> None:
        self._s3 = client
        self.location = location
        self._part_size = part_size

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, settings: Settings) -> AsyncIterator[S3BlobStore]:
        location = S3Location.parse(url)
        config = AioConfig(
            connect_timeout=settings.connect_timeout_s, read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible servers answer on one host name: path-style addressing works everywhere.
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
            # Newer botocore adds CRC trailers by default, which several S3-compatible servers reject;
            # integrity is ours anyway (each image's sha256 is in its row and in its key).
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            max_pool_connections=max(10, settings.max_concurrency),
        )
        credentials: dict[str, Any] = {}
        if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
            credentials = {"aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
                           "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value()}
        # Without explicit keys botocore's own chain applies (instance roles, web identity, ~/.aws).
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(get_session().create_client(
                "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region or "us-east-1",
                config=config, **credentials))
            yield cls(client, location)

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.location.bucket}/{self.location.prefix})"

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, durable: bool = True) -> int:
        """Store the stream under `key`; the object appears whole or not at all. Returns its size.

        An exception from `chunks` itself (the download) propagates unchanged; the store's own
        failures raise BlobStoreError. `durable` changes nothing: an acknowledged S3 write is durable.
        """
        full = self.location.key(key)
        parts = _parts(chunks, self._part_size)
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            try:
                await self._s3.put_object(Bucket=self.location.bucket, Key=full, Body=first)
            except FAILURES as exc:
                raise _error("write", key, exc) from exc
            return len(first)
        return await self._multipart(key, full, [first, second], parts)

    async def _multipart(self, key: str, full: str, head: list[bytes], rest: AsyncIterator[bytes]) -> int:
        bucket = self.location.bucket
        try:
            upload = await self._s3.create_multipart_upload(Bucket=bucket, Key=full)
        except FAILURES as exc:
            raise _error("write", key, exc) from exc
        upload_id = upload["UploadId"]
        total = 0
        done: list[CompletedPartTypeDef] = []

        async def send(body: bytes) -> None:
            nonlocal total
            number = len(done) + 1
            try:
                answer = await self._s3.upload_part(Bucket=bucket, Key=full, UploadId=upload_id,
                                                    PartNumber=number, Body=body)
            except FAILURES as exc:
                raise _error("write", key, exc) from exc
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
            total += len(body)

        try:
            for body in head:
                await send(body)
            async for body in rest:  # the source's own exceptions pass through as they are
                await send(body)
            try:
                await self._s3.complete_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id,
                                                         MultipartUpload={"Parts": done})
            except FAILURES as exc:
                raise _error("write", key, exc) from exc
        except BaseException:
            # Shielded: a cancelled download must still abort, or its parts stay stored and invisible.
            await asyncio.shield(self._abort(full, upload_id))
            raise
        return total

    async def _abort(self, full: str, upload_id: str) -> None:
        try:
            await self._s3.abort_multipart_upload(Bucket=self.location.bucket, Key=full, UploadId=upload_id)
        except FAILURES as exc:
            # The bucket's lifecycle rule for incomplete uploads (see README) is the backstop.
            logger.warning("could not abort the multipart upload of %s (%s)", full, type(exc).__name__)

    async def _get_object(self, key: str) -> Any:
        """GET the object; BlobNotFoundError when it is absent, BlobStoreError on any other failure."""
        try:
            return await self._s3.get_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except ClientError as exc:
            if _not_found(exc):
                raise BlobNotFoundError(f"no image {key} in the store") from None
            raise _error("read", key, exc) from exc
        except FAILURES as exc:
            raise _error("read", key, exc) from exc

    async def get(self, key: str) -> bytes:
        answer = await self._get_object(key)
        try:
            async with answer["Body"] as body:
                data: bytes = await body.read()
                return data
        except FAILURES as exc:
            raise _error("read", key, exc) from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; BlobNotFoundError at the first step when it is absent."""
        answer = await self._get_object(key)
        async with answer["Body"] as body:
            try:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk
            except FAILURES as exc:
                raise _error("read", key, exc) from exc

    async def size(self, key: str) -> int | None:
        full = self.location.key(key)
        try:
            head = await self._s3.head_object(Bucket=self.location.bucket, Key=full)
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise _error("inspect", key, exc) from exc
        except FAILURES as exc:
            raise _error("inspect", key, exc) from exc
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        full = self.location.key(key)
        try:
            await self._s3.delete_object(Bucket=self.location.bucket, Key=full)
        except FAILURES as exc:
            raise _error("delete", key, exc) from exc

    def local_path(self, key: str) -> Path | None:
        return None  # remote: readers go through get/stream

    async def check(self) -> None:
        """Can we write? A tiny object under the prefix, written and removed (a HEAD on the bucket would
        pass keys that may only read)."""
        probe = self.location.under_prefix(HEALTH_KEY)
        try:
            await self._s3.put_object(Bucket=self.location.bucket, Key=probe, Body=b"ok")
            await self._s3.delete_object(Bucket=self.location.bucket, Key=probe)
        except FAILURES as exc:
            raise _error("write", HEALTH_KEY, exc) from exc
