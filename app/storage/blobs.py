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
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.errors import BlobNotFoundError, BlobStoreError

# `<generation id>-<16 random hex>.<ext>`, and its cached thumbnail `….thumb.jpg`.
STORED_NAME = re.compile(r"[0-9]{1,18}-[0-9a-f]{16}(\.thumb)?\.(png|jpg|webp)")

# Bytes gathered before one trip to a worker thread. Each trip costs CPU (a wake-up, a future, a
# callback), so a 1.6 MB image goes in three trips (the last one also fsyncs and renames) rather
# than nine; a download in progress holds at most this much.
WRITE_BATCH = 512 * 1024
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
        spill = _Spill(self._tmp_path(key), self.local_path(key), durable)
        batch: list[bytes] = []
        pending = written = 0
        try:
            async for chunk in chunks:  # an exception from the source propagates as it is
                batch.append(chunk)
                pending += len(chunk)
                if pending >= WRITE_BATCH:
                    await self._step(spill, spill.write, batch)
                    written += pending
                    batch, pending = [], 0
            # The last bytes, fsync, rename and the directory's fsync: one trip to a thread.
            await self._step(spill, spill.commit, batch)
            return written + pending
        except BaseException:
            if not spill.abandoned:
                spill.discard()  # no thread holds the file now: closing and unlinking here is safe
            raise

    @staticmethod
    async def _step(spill: _Spill, fn: Callable[[list[bytes]], None], batch: list[bytes]) -> None:
        """Run one file step in a worker thread. A cancelled caller does not stop the thread, so the
        file is discarded when the thread is done with it, never under its feet."""
        step = asyncio.ensure_future(asyncio.to_thread(fn, batch))
        try:
            await asyncio.shield(step)
        except asyncio.CancelledError:
            spill.abandoned = True
            step.add_done_callback(lambda _: spill.discard())
            raise
        except OSError as exc:
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


class _Spill:
    """A temporary file on its way to its final name. Touched by one worker thread at a time."""

    def __init__(self, tmp: Path, final: Path, durable: bool) -> None:
        self.tmp = tmp
        self.final = final
        self.durable = durable
        self.fd = -1
        self.renamed = False
        self.abandoned = False  # a cancelled put left a thread running; it discards when done

    def write(self, batch: list[bytes]) -> None:
        if self.fd < 0:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        # One system call per batch, and no copy to join the chunks.
        views = [memoryview(b) for b in batch if b]
        while views:
            done = os.writev(self.fd, views)
            while done:
                if done >= len(views[0]):
                    done -= len(views.pop(0))
                else:
                    views[0] = views[0][done:]
                    done = 0

    def commit(self, batch: list[bytes]) -> None:
        """Write the rest, fsync (unless a cache), close, rename, and make the rename itself durable."""
        self.write(batch)
        if self.durable:
            os.fsync(self.fd)
        fd, self.fd = self.fd, -1
        os.close(fd)
        os.replace(self.tmp, self.final)
        self.renamed = True
        if self.durable:
            _fsync_dir(self.final.parent)

    def discard(self) -> None:
        """All or nothing: whatever this put made goes, quietly (its own error is what the caller hears)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove_quietly(self.tmp)
        if self.renamed:
            _remove_quietly(self.final)


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


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


