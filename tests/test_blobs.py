"""The BlobStore contract, one suite for every backend (add a backend to BACKENDS and `_open`)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.errors import BlobNotFoundError, BlobStoreError
from app.storage.blobs import BlobStore, LocalBlobStore
from app.storage.s3 import S3BlobStore
from tests.conftest import s3_settings, small_filesystem

# "s3" is a real SeaweedFS (tests/services.py), one prefix per test.
BACKENDS = ["local", "s3"]
KEY = "7-0123456789abcdef.png"

_listings: dict[int, Callable[[], list[str]]] = {}


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        local = LocalBlobStore(tmp_path / "blobs")
        _listings[id(local)] = lambda: sorted(os.listdir(local.root))
        yield local
        del _listings[id(local)]
    elif request.param == "s3":
        s3 = request.getfixturevalue("seaweed")
        prefix = f"contract-{uuid.uuid4().hex[:12]}"
        settings = s3_settings(tmp_path, s3, prefix)
        assert settings.image_store is not None
        async with S3BlobStore.open(settings.image_store, settings) as remote:
            # Objects and multipart uploads begun but never finished (invisible, yet stored).
            _listings[id(remote)] = lambda: sorted(
                key.removeprefix(prefix + "/") for key in s3.keys(prefix + "/") + s3.uploads_in_progress(prefix + "/"))
            yield remote
            del _listings[id(remote)]
    else:  # pragma: no cover - a backend listed without a constructor here
        raise AssertionError(request.param)


def leftovers(store: BlobStore) -> list[str]:
    """Every name in the backend, temporaries (or unfinished uploads) included."""
    return _listings[id(store)]()


async def chunks_of(data: bytes, size: int = 50_000, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for sent, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and sent == fail_after:
            raise ValueError("the source broke")
        yield data[start:start + size]
        await asyncio.sleep(0)


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_a_put_object_reads_back_whole_by_get_stream_and_size(store: BlobStore) -> None:
    data = os.urandom(1_300_000)
    assert await store.put(KEY, chunks_of(data)) == len(data)
    assert await store.get(KEY) == data
    assert await collect(store.stream(KEY)) == data
    assert await store.size(KEY) == len(data)
    assert leftovers(store) == [KEY]


async def test_put_replaces_an_object_whole(store: BlobStore) -> None:
    await store.put(KEY, chunks_of(b"a" * 300_000))
    await store.put(KEY, chunks_of(b"b" * 1000), durable=False)
    assert await store.get(KEY) == b"b" * 1000


async def test_a_source_that_raises_leaves_nothing_and_its_error_propagates(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="the source broke"):
        await store.put(KEY, chunks_of(os.urandom(1_000_000), fail_after=10))
    assert await store.size(KEY) is None
    assert leftovers(store) == []


async def test_a_cancelled_put_leaves_nothing(store: BlobStore) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 100_000
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(store.put(KEY, endless()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.size(KEY) is None
    assert leftovers(store) == []


async def test_missing_objects_are_reported_as_missing(store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        await store.get(KEY)
    with pytest.raises(BlobNotFoundError):
        await collect(store.stream(KEY))
    assert await store.size(KEY) is None
    await store.delete(KEY)  # absent is fine


async def test_delete_removes_the_object(store: BlobStore) -> None:
    await store.put(KEY, chunks_of(b"abc"))
    await store.delete(KEY)
    assert await store.size(KEY) is None


@pytest.mark.parametrize("key", ["../etc/passwd", "x.png", "1-0123456789abcdef.png/../../a", "", "1-0123.png"])
async def test_only_server_made_names_are_keys(store: BlobStore, key: str) -> None:
    with pytest.raises(BlobStoreError, match="invalid stored image name"):
        await store.put(key, chunks_of(b"abc"))
    with pytest.raises(BlobStoreError):
        await store.get(key)


async def test_check_passes_on_a_writable_store(store: BlobStore) -> None:
    await store.check()
    assert leftovers(store) == []


async def test_a_full_disk_fails_the_put_with_our_error_and_leaves_nothing(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full", 256) as root:
        store = LocalBlobStore(root)
        with pytest.raises(BlobStoreError, match="No space left on device"):
            await store.put(KEY, chunks_of(os.urandom(1_000_000)))
        assert await store.size(KEY) is None
        assert os.listdir(root) == []


async def test_a_read_only_directory_fails_put_and_check_with_our_error(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", 256, read_only=True) as root:
        store = LocalBlobStore(root)
        with pytest.raises(BlobStoreError, match="Read-only file system"):
            await store.put(KEY, chunks_of(b"abc"))
        with pytest.raises(BlobStoreError, match="not writable"):
            await store.check()
        assert os.listdir(root) == []
