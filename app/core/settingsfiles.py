"""Reading the small files settings name (prices, styles): capped, and every failure one line naming it."""

from __future__ import annotations

from pathlib import Path


def read_capped(path: Path, where: str, max_bytes: int, error: type[Exception], too_large: str = "") -> bytes:
    """The file's bytes; `error(f"{where}: ...")` when it cannot be read or is over `max_bytes`
    (`too_large`: what to add to that message, e.g. what the file should hold)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{where}: cannot be read ({exc.strerror})") from None
    if len(raw) > max_bytes:
        raise error(f"{where}: larger than {max_bytes} bytes{too_large}")
    return raw
