"""Caps on the extra arguments a caller attaches to pix_generate (kept on the row, never sent).

Teams tag requests with them, so they are kept; without a cap one caller could store megabytes per
call and make every caller's list_generations answer huge. A call over a cap is refused before
anything is recorded or sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExtraCaps:
    count: int = 16  # extra arguments per call
    depth: int = 4  # lists/objects nested inside one argument's value
    size: int = 4096  # bytes of all extra arguments as compact UTF-8 JSON


def _name(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "…"


def _walk_problem(name: str, value: Any, caps: ExtraCaps) -> str | None:
    """Depth over the cap, or a float JSON cannot hold. Iterative: a hostile value cannot recurse us."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"extra argument `{_name(name)}` holds NaN or Infinity, which JSON cannot store"
        if isinstance(item, dict | list):
            if depth + 1 > caps.depth:
                return f"extra argument `{_name(name)}` nests lists or objects more than {caps.depth} deep"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def extra_problem(extra: Mapping[str, Any], caps: ExtraCaps) -> str | None:
    """Why these extra arguments cannot be kept, naming the cap; None when they can."""
    if len(extra) > caps.count:
        return f"at most {caps.count} extra arguments are kept per call (got {len(extra)})"
    for name, value in extra.items():
        if (problem := _walk_problem(name, value, caps)) is not None:
            return problem
    size = len(json.dumps(dict(extra), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
    if size > caps.size:
        return f"extra arguments may take at most {caps.size} bytes as JSON (got {size})"
    return None
