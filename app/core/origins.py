"""Where a kept image came from, for the provenance written into it (app.storage.provenance).

A generation made from text is trainedAlgorithmicMedia. An edit is made from its input image: the
generation its `image` argument names (as recorded: an id or a pixazo:// URI; a repeated edit names the
same input as the edit it repeats), else its parent. It stays trainedAlgorithmicMedia while every image
up its chain of inputs was made by a model; once the chain reaches an upload (the caller's own image),
or an image we never held (an https URL), it is compositeWithTrainedAlgorithmicMedia. The input's stored
copy becomes the edit's C2PA ingredient. Knows no MCP and no HTTP.
"""

from __future__ import annotations

import re
from typing import Any

from app.storage.database import RecordStore
from app.storage.provenance import COMPOSITE, TRAINED, ParentImage, Provenance
from app.storage.records import IMAGE_URI, Generation

UPLOAD = "upload"
GENERATE = "generate"
_URI = re.compile(re.escape(IMAGE_URI).replace(re.escape("{id}"), r"(\d{1,19})"))
MAX_CHAIN = 64  # an edit of an edit of ... : the walk up stops here (and at a loop, which ids rule out)


def input_id(gen: Generation) -> int | None:
    """The generation an edit's `image` names, else its parent; None for an https URL or no input."""
    given: Any = gen.parameters.get("image")
    if isinstance(given, bool):
        return None
    if isinstance(given, int):
        return given
    if isinstance(given, str):
        text = given.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            return int(text)
        if (match := _URI.fullmatch(text)) is not None:
            return int(match.group(1))
        return None  # an https URL: an image we never held
    return gen.parent_id


async def _from_outside(store: RecordStore, source: Generation | None) -> bool:
    """Whether an image's chain of inputs reaches the caller's own image (an upload, an https URL)."""
    seen: set[int] = set()
    while source is not None and source.id not in seen and len(seen) < MAX_CHAIN:
        seen.add(source.id)
        if source.operation == UPLOAD:
            return True
        if source.operation == GENERATE:
            return False
        found = input_id(source)
        if found is None:
            return True
        source = await store.get(found)
    return source is None  # a row that is gone: nothing says a model made it


async def provenance_of(store: RecordStore, gen: Generation) -> Provenance:
    """What the image of generation `gen` (not an upload) says about where it came from."""
    if gen.operation == GENERATE:
        return Provenance(gen.id, gen.operation, gen.model)
    found = input_id(gen)
    source = await store.get(found) if found is not None else None
    parent = None
    if source is not None and source.image_path and source.image_mime:
        parent = ParentImage(source.image_path, source.image_mime, f"generation {source.id}")
    composite = await _from_outside(store, source)
    return Provenance(gen.id, gen.operation, gen.model, COMPOSITE if composite else TRAINED, parent)
