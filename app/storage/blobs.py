"""Where image bytes live: one small interface (`BlobStore`) and its local-directory implementation.

The downloader streams into `put` as bytes arrive, so no backend ever needs the whole object in
memory. Keys are names the server made (`STORED_NAME`), never anything a caller typed. Another
backend (an S3-compatible object store) implements the same Protocol; `tests/test_blobs.py` runs one
suite over every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import re
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from app.errors import BlobNotFoundError, BlobStoreError

# `<generation id>-<16 hex of the sha256>.<ext>`, and its cached thumbnail `….thumb.jpg`.
STORED_NAME = re.compile(r"[0-9]{1,18}-[0-9a-f]{16}(\.thumb)?\.(png|jpg|webp)")

# Bytes gathered before one trip to a worker thread: each trip costs tens of microseconds of CPU,
# so a 1.5 MB image goes in about six writes instead of two dozen 64 KB ones.
WRITE_BATCH = 256 * 1024
READ_CHUNK = 256 * 1024


def check_key(key: str) -> str:
    """Refuse anything but a server-made name: nothing outside the store's root, ever."""
    if not STORED_NAME.fullmatch(key):
        raise BlobStoreError("invalid stored image name")
    return key


def storage_reason(exc: OSError) -> str:
    """An OSError as a short reason for rows and callers: the errno's words, never the path."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return type(exc).__name__


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], *, durable: bool = True) -> int:
        """Store the object from chunks as they arrive; return bytes written. Atomic: afterwards the
        whole object exists under key, or (on any failure, including the iterable raising) nothing
        does and no temporary is left. Storage failures raise BlobStoreError; an exception raised by
        the iterable itself propagates unchanged."""
        ...

    async def get(self, key: str) -> bytes:
        """A small object (thumbnails) whole. Missing: BlobNotFoundError."""
        ...

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """A large object in chunks (for /images responses). Missing: BlobNotFoundError on first read."""
        ...

    async def size(self, key: str) -> int | None:
        """The object's size, None when absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""
        ...

    async def check(self) -> None:
        """Cheap "can I write?" for /healthz; raises BlobStoreError."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A file that readers may open directly (decode in place, sendfile), or None for a remote
        backend, whose readers go through `get`/`stream` or a local spool."""
        ...


_tmp_names = itertools.count()


class LocalBlobStore:
    """Objects as files in one directory: temporary file in the same directory, fsync, rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def local_path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _tmp_path(self, key: str) -> Path:
        # Dot-prefixed so no reader (gallery, backup) takes it for an image; unique per process and put.
        return self.root / f".{key}.{os.getpid()}.{next(_tmp_names)}.tmp"

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, durable: bool = True) -> int:
        final = self.local_path(key)
        tmp = self._tmp_path(key)
        try:
            fh: IO[bytes] = await asyncio.to_thread(open, tmp, "xb")
        except OSError as exc:
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc
        written = 0
        try:
            batch: list[bytes] = []
            pending = 0
            async for chunk in chunks:  # an exception from the source propagates as it is
                batch.append(chunk)
                pending += len(chunk)
                if pending >= WRITE_BATCH:
                    await self._write(fh, batch)
                    written += pending
                    batch, pending = [], 0
            if pending:
                await self._write(fh, batch)
                written += pending
        except BaseException:
            # On failure or cancellation the temporary goes at once, synchronously: a cancelled task
            # cannot await a thread, and closing and unlinking are quick.
            _close_quietly(fh)
            _remove_quietly(tmp)
            raise
        await self._commit(fh, tmp, final, durable)
        return written

    async def _write(self, fh: IO[bytes], batch: list[bytes]) -> None:
        try:
            await asyncio.to_thread(_write_all, fh, batch)
        except OSError as exc:
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc

    async def _commit(self, fh: IO[bytes], tmp: Path, final: Path, durable: bool) -> None:
        commit = asyncio.ensure_future(asyncio.to_thread(_finish_file, fh, tmp, final, durable))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # A thread cannot be stopped: when it has finished, undo whatever it managed to do, so a
            # cancelled put leaves nothing behind, like any other failed one.
            commit.add_done_callback(lambda _: _undo(tmp, final))
            raise
        except OSError as exc:
            _remove_quietly(tmp)
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc

    async def get(self, key: str) -> bytes:
        path = self.local_path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFoundError(f"no stored object {key}") from None
        except OSError as exc:
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        path = self.local_path(key)
        try:
            fh = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no stored object {key}") from None
        except OSError as exc:
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc
        try:
            while True:
                chunk = await asyncio.to_thread(fh.read, READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            fh.close()

    async def size(self, key: str) -> int | None:
        path = self.local_path(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"the image storage failed: {storage_reason(exc)}") from exc

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._probe)
        except OSError as exc:
            raise BlobStoreError(f"the image storage is not writable: {storage_reason(exc)}") from exc

    def _probe(self) -> None:
        probe = self.root / f".healthz.{os.getpid()}.{next(_tmp_names)}.tmp"
        with open(probe, "xb") as fh:
            try:
                fh.write(b"ok")
                fh.flush()  # a full disk shows here, not at open
            finally:
                _remove_quietly(probe)


def _write_all(fh: IO[bytes], batch: list[bytes]) -> None:
    for chunk in batch:
        fh.write(chunk)


def _finish_file(fh: IO[bytes], tmp: Path, final: Path, durable: bool) -> None:
    """Flush, fsync (unless a cache), close, rename, and make the rename itself durable."""
    try:
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    finally:
        fh.close()
    os.replace(tmp, final)
    if durable:
        try:
            _fsync_dir(final.parent)
        except OSError:
            final.unlink(missing_ok=True)  # all or nothing: a rename that may not last is undone
            raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some filesystems refuse to open a directory; the file itself is synced
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # not supported here: nothing more to do
            raise
    finally:
        os.close(fd)


def _undo(*paths: Path) -> None:
    for path in paths:
        _remove_quietly(path)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _close_quietly(fh: IO[bytes]) -> None:
    # The write already failed, and its error is what the caller hears.
    with contextlib.suppress(OSError):
        fh.close()
