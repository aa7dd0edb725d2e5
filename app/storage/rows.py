"""Small values the record stores of both engines share: who owns a row, and what a limit check found."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
class CallMeta:
    """What a call is, beyond its prompt and parameters: written with its row when it is admitted.

    `cost_usd` is the price charged for the call (None: not known); while the call is in flight it
    already counts against the caller's daily budget, so concurrent calls cannot overspend it.
    """

    model: str = "sdxl"
    operation: str = "generate"
    parent_id: int | None = None
    cost_usd: float | None = None
    _: KW_ONLY  # the rest by name: two branches once added a field here at the same position
    style: str | None = None  # the team style applied (PIXAZO_STYLES_FILE); the prompt is the expanded one
    batch_id: str | None = None  # shared by the images of one call with `n` > 1 (variations)


@dataclass(frozen=True)
class Admission:
    """The row a call got: PENDING when admitted, or already finished when refused: RATE_LIMITED by a
    limit, BUDGET_EXCEEDED by the daily budget. A batch (variations) has a row per image, all admitted
    or all refused: `generations`, in order (`generation` is the first)."""

    generation: Generation
    refused_by: str | None  # "pending", "per-minute", "daily" or "budget"
    generations: tuple[Generation, ...] = ()


@dataclass(frozen=True)
class Usage:
    """A caller's admitted calls since two moments (limits are counted from the shared record)."""

    minute: int
    day: int
    oldest_in_minute: str | None


INTERRUPTED_ERROR = "the server stopped before this call finished"
RATE_LIMITED = "RATE_LIMITED"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
# Refused before anything was sent: neither counts as a call against the limits nor as spend.
REFUSED = (RATE_LIMITED, BUDGET_EXCEEDED)
# A call may fit a budget exactly: sums of prices in floating point (0.07 + 0.07) must not refuse it.
BUDGET_EPSILON = 1e-9


def refused_by(row: Mapping[str, Any]) -> str | None:
    """What refused an admission's row: "pending", "per-minute", "daily", "budget", or None when admitted."""
    if row["status"] == RATE_LIMITED:
        return str(row["error"]).removesuffix(" limit")
    if row["status"] == BUDGET_EXCEEDED:
        return "budget"
    return None
