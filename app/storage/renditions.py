"""Smaller renditions of a stored image: the inline thumbnail and the in-chat app's view.

libvips (through pyvips, with its binary wheel so that `pip install` needs no system library)
decodes and shrinks, in one streaming pass that never holds the full-size image: a noisy 1024² PNG
for about 80 % of Pillow's CPU, a photograph's for about the same. It reads every type the server
accepts (PNG, JPEG, WebP). The small result is encoded by Pillow: its libjpeg-turbo writes a 512 px
JPEG in 0.9 ms where the wheel's libvips takes 2.1 ms, and a noisy thumbnail may need three tries
to fit the budget. Each call runs in the image pool; libvips' own threads are set to one, since the
pool already keeps every core busy, and its operation cache is off: every image is seen once.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pyvips
from PIL import Image

THUMB_MAX_SIDE = 512
THUMB_MAX_BYTES = 40 * 1024  # an inline thumbnail is paid for in the agent's context: it renders well at this
THUMB_MIME = "image/jpeg"
DISPLAY_MAX_SIDE = 1024  # the in-chat app's rendition: large enough to look at, small enough to send
CHECKER = 16  # the side of a checkerboard square behind transparency, in pixels
QUALITIES = (80, 70, 60, 50, 40)

pyvips.concurrency_set(1)
pyvips.cache_set_max(0)
# libvips tells GLib (and pyvips tells Python's logging) "threadpool completed" at INFO for every
# pipeline: a log line per image in the server's log, and its cost, for nothing an operator needs.
logging.getLogger("pyvips").setLevel(logging.WARNING)


def decode_limit() -> int:
    """The most pixels a rendition decodes: Pillow's decompression-bomb limit, one process-wide limit for
    both libraries, which the server sets at start-up to its own largest cap (the editing tools').
    Downloads and uploads check their header against the same caps first; this holds for any caller."""
    return int(Image.MAX_IMAGE_PIXELS or 0) or 1 << 62


class RenditionError(ValueError):
    """The source does not decode (damaged, truncated, not an image) or is too large to decode."""


def _open(source: Path | bytes) -> pyvips.Image:
    try:
        if isinstance(source, bytes):
            img = pyvips.Image.new_from_buffer(source, "", access="sequential", fail_on="error")
        else:
            img = pyvips.Image.new_from_file(str(source), access="sequential", fail_on="error")
    except pyvips.Error as exc:
        raise RenditionError("the file is not a readable image") from exc
    if img.width * img.height > (limit := decode_limit()):
        raise RenditionError(f"the image has {img.width * img.height} pixels, more than {limit}")
    return img


def _shrunk(img: pyvips.Image, side: int) -> pyvips.Image:
    """At most `side` px on the long side: a block average by the whole factor (as cheap as it gets, and
    what a 1024 -> 512 thumbnail needs), then a resample of what is left over."""
    factor = max(img.width, img.height) // side
    if factor >= 2:
        img = img.shrink(factor, factor)
    if max(img.width, img.height) > side:
        img = img.resize(side / max(img.width, img.height))
    return img


def _srgb(img: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (with its alpha, if any): 16-bit, grey, CMYK and palette images alike."""
    if img.interpretation != "srgb" or img.format != "uchar":
        img = img.colourspace("srgb")
    if img.format != "uchar":
        img = img.cast("uchar")
    return img


def _on_checkerboard(img: pyvips.Image) -> pyvips.Image:
    """A transparent image over the usual grey-and-white squares (a JPEG has no transparency, and black
    would hide a cut-out's edges)."""
    xy = pyvips.Image.xyz(img.width, img.height) // CHECKER
    board = ((xy[0] + xy[1]) % 2 == 0).ifthenelse(255, 204).cast("uchar")
    board = board.bandjoin([board, board]).copy(interpretation="srgb")
    return board.composite2(img, "over")[0:3].cast("uchar")


def _pixels(source: Path | bytes, side: int, *, flatten: bool) -> tuple[Image.Image, bool]:
    """Decoded and shrunk by libvips in one streaming pass, handed over as a Pillow image for encoding;
    and whether the source had transparency (`flatten` puts it on the checkerboard)."""
    img = _srgb(_shrunk(_open(source), side))
    alpha = bool(img.hasalpha())
    if alpha and flatten:
        img = _on_checkerboard(img)
    try:
        data = img.write_to_memory()  # the decode itself runs here: a truncated or damaged file ends here
    except pyvips.Error as exc:
        raise RenditionError("the file is not a readable image (it does not decode)") from exc
    return Image.frombytes("RGBA" if img.bands == 4 else "RGB", (img.width, img.height), data), alpha


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_thumbnail(source: Path | bytes) -> bytes:
    """A JPEG at most THUMB_MAX_SIDE px on its long side and at most THUMB_MAX_BYTES."""
    small, _ = _pixels(source, THUMB_MAX_SIDE, flatten=True)
    while True:
        for quality in QUALITIES:
            data = _jpeg(small, quality)
            if len(data) <= THUMB_MAX_BYTES:
                return data
        small = small.reduce(2)


def make_display(source: Path | bytes) -> tuple[bytes, str]:
    """A rendition at most DISPLAY_MAX_SIDE px on its long side: PNG where the image has transparency
    (a removed background stays see-through), JPEG otherwise. (bytes, MIME type)."""
    small, alpha = _pixels(source, DISPLAY_MAX_SIDE, flatten=False)
    if alpha:
        out = io.BytesIO()
        small.save(out, format="PNG", compress_level=6)
        return out.getvalue(), "image/png"
    return _jpeg(small, 85), "image/jpeg"
