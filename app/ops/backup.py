"""A consistent copy of the database while the server runs (SQLite's online backup API)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path


def backup(source: Path, dest: Path) -> int:
    """Copy `source` to `dest` atomically; return the number of generations in the copy.

    In WAL mode the copy reads one snapshot without blocking the server's writer. The copy is made
    next to `dest` and renamed into place only after an integrity check, so `dest` is never partial.
    """
    if not source.exists():
        raise FileNotFoundError(f"no database at {source}")
    if dest.is_dir():
        dest = dest / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(tmp)
        try:
            src.backup(out)  # all pages in one step: one consistent snapshot
            out.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
            if out.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise RuntimeError("the copy failed its integrity check")
            count = int(out.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
        finally:
            out.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    return count
