"""Masks painted in the in-chat app: checked, brought to the image's size, and kept as a generation of
their own (operation `mask`, parent the painted image, cost 0) so that an inpainting call can name
them like any input image (Pixazo fetches them by a signed link)."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from app.core.service import SUCCESS, GenerationService
from app.storage.images import DECODE_ERRORS
from app.storage.records import Generation
from app.storage.rows import CallMeta

MAX_MASK_BYTES = 8 * 1024 * 1024


class MaskProblem(ValueError):
    """The mask cannot be used; the message says why, for the caller."""


def _normalize(mask: bytes, size: tuple[int, int]) -> bytes:
    """The mask as a grey PNG of `size`: white where the image is repainted, black where it is kept."""
    try:
        with Image.open(io.BytesIO(mask)) as img:
            if img.format != "PNG":
                raise MaskProblem("the mask must be a PNG")
            if img.width * img.height > 4096 * 4096:
                raise MaskProblem("the mask is larger than 4096 x 4096 pixels")
            grey = img.convert("L")
    except DECODE_ERRORS:
        raise MaskProblem("the mask is not a readable PNG") from None
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    grey = grey.point(lambda v: 255 if v >= 128 else 0)
    if grey.getextrema()[1] == 0:
        raise MaskProblem("the mask is empty: paint the part of the image to repaint")
    out = io.BytesIO()
    grey.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


async def keep_mask(service: GenerationService, image: Generation, mask: bytes, caller: str | None) -> Generation:
    """Check the mask, size it to `image`, and record it as a finished generation made from `image`."""
    if len(mask) > MAX_MASK_BYTES:
        raise MaskProblem(f"the mask is larger than {MAX_MASK_BYTES} bytes")
    if not image.image_path:
        raise MaskProblem(f"generation {image.id} has no stored image to paint on")
    source = await service.images.read(image.image_path)
    loop = asyncio.get_running_loop()
    size = await loop.run_in_executor(service.images.pool, _size_of, source)
    png = await loop.run_in_executor(service.images.pool, _normalize, mask, size)
    row = await service.store.insert_pending(f"mask painted on generation {image.id}", {"image": image.id}, caller,
                                             meta=CallMeta("app", "mask", image.id, 0.0))
    stored = await service.images.keep_bytes(png, row.id, ".png", "image/png")
    return await service.store.finish(row.id, SUCCESS, image=stored, duration_ms=0, attempts=0, cost_usd=0.0)
