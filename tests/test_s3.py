"""The S3 backend beyond the common contract (tests/test_blobs.py): objects larger than one part go up
as multipart uploads that are aborted on any failure, and a store it cannot reach or write to is an
error that names no secret. Against a real SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.errors import BlobStoreError
from app.storage.s3 import PART_SIZE, S3BlobStore, S3Location
from tests.conftest import free_port, s3_settings
from tests.services import SeaweedS3

KEY = "9-0123456789abcdef.png"
BIG = PART_SIZE + PART_SIZE // 2  # two parts: a multipart upload


async def chunks_of(data: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
        await asyncio.sleep(0)


@pytest.fixture
def prefix() -> str:
    return f"s3-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(tmp_path: Path, seaweed: SeaweedS3, prefix: str) -> AsyncIterator[S3BlobStore]:
    settings = s3_settings(tmp_path, seaweed, prefix)
    assert settings.image_store is not None
    async with S3BlobStore.open(settings.image_store, settings) as blobs:
        yield blobs


def test_an_s3_url_names_the_bucket_and_the_prefix() -> None:
    assert S3Location.parse("s3://images/team/a/") == S3Location("images", "team/a")
    assert S3Location.parse("s3://images").key(KEY) == KEY
    assert S3Location("images", "p").key(KEY) == f"p/{KEY}"
    for bad in ("http://images/p", "s3:///p", "images/p", "s3://b/p?x=1"):
        with pytest.raises(ValueError, match="not an s3://"):
            S3Location.parse(bad)


async def test_an_object_of_several_parts_streams_in_and_reads_back(
        store: S3BlobStore, seaweed: SeaweedS3, prefix: str) -> None:
    data = os.urandom(BIG)
    assert await store.put(KEY, chunks_of(data)) == len(data)
    back = b"".join([chunk async for chunk in store.stream(KEY)])
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    assert await store.size(KEY) == len(data)
    client = seaweed.client()
    try:
        etag = client.head_object(Bucket=seaweed.bucket, Key=f"{prefix}/{KEY}")["ETag"]
    finally:
        client.close()
    assert etag.strip('"').endswith("-2")  # S3's mark of an object completed from two parts


async def test_a_source_failing_after_the_first_part_aborts_the_upload(
        store: S3BlobStore, seaweed: SeaweedS3, prefix: str) -> None:
    async def breaks() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(os.urandom(2 * PART_SIZE + 1000)):  # two whole parts sent, then
            yield chunk
        raise ConnectionResetError("the download broke")

    with pytest.raises(ConnectionResetError, match="the download broke"):
        await store.put(KEY, breaks())
    assert await store.size(KEY) is None
    assert seaweed.keys(prefix + "/") == []
    assert seaweed.uploads_in_progress(prefix + "/") == []


async def test_a_put_cancelled_mid_upload_aborts_it(store: S3BlobStore, seaweed: SeaweedS3, prefix: str) -> None:
    parts_sent = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(os.urandom(2 * PART_SIZE + 1000)):
            yield chunk
        parts_sent.set()
        await asyncio.sleep(60)  # the download stalls; the caller gives up
        yield b"never"

    task = asyncio.create_task(store.put(KEY, stalls()))
    await asyncio.wait_for(parts_sent.wait(), 30)
    deadline = asyncio.get_running_loop().time() + 10
    while not await asyncio.to_thread(seaweed.uploads_in_progress, prefix + "/"):  # the upload is under way
        assert asyncio.get_running_loop().time() < deadline, "the multipart upload never began"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.size(KEY) is None
    assert seaweed.uploads_in_progress(prefix + "/") == []
    assert seaweed.keys(prefix + "/") == []


async def test_wrong_keys_fail_check_and_put_without_showing_the_secret(
        tmp_path: Path, seaweed: SeaweedS3) -> None:
    secret = "wrong-secret-" + uuid.uuid4().hex
    settings = s3_settings(tmp_path, seaweed, "wrong", aws_secret_access_key=SecretStr(secret))
    assert settings.image_store is not None
    async with S3BlobStore.open(settings.image_store, settings) as blobs:
        with pytest.raises(BlobStoreError, match="refused to write") as checked:
            await blobs.check()
        with pytest.raises(BlobStoreError, match="refused to write") as put:
            await blobs.put(KEY, chunks_of(b"data"))
    for exc in (checked.value, put.value):
        assert secret not in str(exc)
        assert secret not in repr(exc.__cause__)


async def test_an_unreachable_store_fails_the_check(tmp_path: Path, seaweed: SeaweedS3) -> None:
    settings = s3_settings(tmp_path, seaweed, "down", s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
                           connect_timeout_s=1.0)
    assert settings.image_store is not None
    async with S3BlobStore.open(settings.image_store, settings) as blobs:
        with pytest.raises(BlobStoreError, match="could not write"):
            await blobs.check()
