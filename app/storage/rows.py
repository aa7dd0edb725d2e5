"""Small values the record stores of both engines share: who owns a row, and what a limit check found."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records imports this module
    from app.storage.records import Generation


def host_key() -> str:
    """This machine and process namespace: pids are comparable only between instances with the same key.

    Two containers may share a host name, never a pid namespace; the namespace's inode tells them apart.
    """
    namespace = ""
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    return f"{socket.gethostname()}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid namespace still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass(frozen=True)
class Instance:
    """One running server process: the owner of the rows it writes while their calls are in flight."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=host_key)
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class Admission:
    """The row a call got: PENDING when admitted, RATE_LIMITED (already finished) when a limit refused it."""

    generation: Generation
    refused_by: str | None  # "per-minute" or "daily"


@dataclass(frozen=True)
class Usage:
    """A caller's admitted calls since two moments (limits are counted from the shared record)."""

    minute: int
    day: int
    oldest_in_minute: str | None


INTERRUPTED_ERROR = "the server stopped before this call finished"
RATE_LIMITED = "RATE_LIMITED"
