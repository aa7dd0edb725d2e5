"""The simulator's images: real-size, real-entropy PNGs, rendered once per size and kept.

Real SDXL PNGs are 1.3-2 MB at 1024x1024, and what the server downloads, stores and thumbnails
should weigh the same, so the simulator draws gradients under coarse noise rather than a flat colour.
Each served image is made distinct by a PNG text chunk added to a cached render.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
import re
import struct
import threading
import zlib
from typing import Any

from PIL import Image, ImageChops, ImageFilter

# Real SDXL PNGs are 1.3-2 MB at 1024x1024: gradients under coarse noise, upscaled so PNG's filters
# find some structure but zlib cannot flatten it, give about 1.6 MB at that size.
VARIANTS = 3  # distinct renders per size; a request picks one from its prompt and seed
# What the images look like: the simulator's gradients under noise (the default), a photograph's
# statistics (`photo`), or a 16 px image whatever the size asked (`tiny`: to measure the server's own
# per-call overhead without the image's).
LOOKS = ("noise", "photo", "tiny")
TINY_SIDE = 16
NOISE_SCALE = 8
NOISE_SIGMA = 40
# What the image route agrees to render. Results larger than MAX_SIDE (an 8x upscale of 1024²) are
# scaled down to fit, keeping the aspect ratio: a 8192² render would cost a minute of CPU and 100 MB.
MIN_SIDE, MAX_SIDE = 16, 2048
# `{n}-{w}x{h}-{variant}.png`; an `a` after the variant: RGBA (background removal's transparent PNG).
IMAGE_NAME = re.compile(r"([0-9]{1,12})-([0-9]{2,4})x([0-9]{2,4})-([0-9])(a?)\.png")
_render_lock = threading.Lock()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


IEND = png_chunk(b"IEND", b"")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=16)
def _render(width: int, height: int, variant: int, alpha: bool = False, look: str = "noise") -> bytes:
    """One real-size PNG without its IEND chunk, in one of LOOKS (about 0.5-1 s of CPU at 1024x1024).

    With `alpha`, an RGBA PNG whose subject (the centre) is opaque and whose edges are transparent,
    the way a background removal's result looks."""
    if look not in LOOKS:
        raise ValueError(f"look must be one of {', '.join(LOOKS)}")
    if look == "tiny":
        width = height = TINY_SIDE
    img = _photo(width, height, variant) if look == "photo" else _gradients(width, height, variant)
    if alpha:
        radial = Image.radial_gradient("L").resize((width, height))
        # radial_gradient is 0 at the centre and 255 at the corners: inverted, an opaque subject
        img.putalpha(ImageChops.invert(radial).point(lambda v: 255 if v > 128 else 0))
    out = io.BytesIO()
    # The simulator's own look is written fast; the photograph as a typical encoder writes it (zlib
    # level 6 with Pillow's adaptive filters, as diffusers' save does).
    img.save(out, format="PNG", compress_level=6 if look == "photo" else 1)
    data = out.getvalue()
    if not data.endswith(IEND):  # pragma: no cover - Pillow always ends a PNG with IEND
        raise ValueError("Pillow wrote a PNG without IEND")
    return data[: -len(IEND)]


def _gradients(width: int, height: int, variant: int) -> Image.Image:
    """The simulator's look: gradients under coarse noise (about 1.6 MB at 1024²)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    planes = [gradient, gradient.transpose(Image.Transpose.TRANSPOSE).resize((width, height)), radial]
    planes = planes[variant % 3:] + planes[:variant % 3]
    base = Image.merge("RGB", planes)
    small = (max(1, width // NOISE_SCALE), max(1, height // NOISE_SCALE))
    noise = Image.merge("RGB", [
        _noise(small, (width, height, variant, plane)).resize((width, height), Image.Resampling.BILINEAR)
        for plane in range(3)])
    return ImageChops.add(base, noise, scale=1.0, offset=-128)


def _octaves(width: int, height: int, seed: tuple[object, ...], sides: tuple[int, ...]) -> Image.Image:
    """Random planes from coarse to fine, each with less weight (amplitude ~ 1 / side^0.8): the
    falling spectrum of natural images, so smooth areas, soft structure and fine texture all appear."""
    rng = random.Random(repr(seed))  # noqa: S311 - test pixels, not security
    acc, total = Image.new("L", (width, height), 128), 0.0
    for side in sides:
        weight = 1.0 / side ** 0.8
        total += weight
        layer = Image.frombytes("L", (side, side), rng.randbytes(side * side))
        acc = Image.blend(acc, layer.resize((width, height), Image.Resampling.BICUBIC), weight / total)
    return acc


def _photo(width: int, height: int, variant: int) -> Image.Image:
    """A photograph's statistics, not its subject: a luminance plane with a natural image's falling
    spectrum and a few hard-edged shapes, a weak low-frequency colour cast per channel, and sensor
    grain. A 1024² render is about 1.9 MB as a PNG, as SDXL's photographs are; no two variants alike."""
    rng = random.Random(repr(("photo", width, height, variant)))  # noqa: S311 - test pixels, not security
    light = _octaves(width, height, ("L", variant), (4, 8, 16, 32, 64, 128, 256, 512, 1024))
    light = Image.eval(light, lambda v: max(0, min(255, (v - 128) * 4 + 128)))
    shapes = _octaves(width, height, ("S", variant), (3, 6, 12)).point(lambda v: 60 if v > 132 else 0)
    light = ImageChops.subtract(light, shapes.filter(ImageFilter.GaussianBlur(1)))
    planes = []
    for channel in range(3):
        cast = rng.randint(-30, 30)
        table = [max(0, min(255, (v - 128) * 2 + 128 + cast)) for v in range(256)]
        colour = _octaves(width, height, ("C", variant, channel), (2, 4, 8, 16)).point(table)
        planes.append(ImageChops.add(light, colour, 1.0, -128))
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(lambda v: 117 + v // 12)
    return ImageChops.add(Image.merge("RGB", planes), Image.merge("RGB", [grain] * 3), 1.0, -128)


def _noise(size: tuple[int, int], seed: tuple[int, ...]) -> Image.Image:
    """Gaussian noise around 128 (as Image.effect_noise), but the same in every process: a restarted
    demo serves the very bytes an earlier image link served (a stored copy and its link agree)."""
    rng = random.Random(repr(seed))  # noqa: S311 - test pixels, not security
    gauss = rng.gauss
    return Image.frombytes("L", size, bytes(min(255, max(0, int(gauss(128, NOISE_SIGMA))))
                                            for _ in range(size[0] * size[1])))


def rendered(width: int, height: int, variant: int, alpha: bool = False, look: str = "noise") -> bytes:
    """The cached render (made once per size, variant and look, under a lock so a crowd waits for one)."""
    with _render_lock:
        return _render(width, height, variant, alpha, look)


def variant_of(prompt: str, seed: int) -> int:
    return hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[0] % VARIANTS


def text_chunk(text: str) -> bytes:
    """A PNG tEXt chunk: what makes every served image distinct at the cost of a few bytes."""
    return png_chunk(b"tEXt", b"Comment\0" + text.encode("latin-1", "replace"))


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A whole real-size PNG for this prompt and seed (the simulator serves the same shape)."""
    return rendered(width, height, variant_of(prompt, seed)) + text_chunk(f"{prompt}|{seed}") + IEND


@functools.lru_cache(maxsize=2)
def huge_png(side: int) -> bytes:
    """A flat side x side RGB PNG of about 440 KB at 12000 px, which a decoder would expand to 432 MB:
    a decompression bomb for download tests, made in a fraction of a second without the pixels.

    One band of rows is deflated once and ended with a full flush, which resets the compressor, so
    the same bytes can simply repeat; the zlib trailer's Adler-32 still covers every row."""
    rows_per_band = 100
    band = (b"\0" + b"\x80" * (side * 3)) * rows_per_band
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib header is written below
    packed = deflate.compress(band) + deflate.flush(zlib.Z_FULL_FLUSH)
    bands, rest = divmod(side, rows_per_band)
    checksum = 1
    for _ in range(bands):
        checksum = zlib.adler32(band, checksum)
    tail = b""
    if rest:
        tail_rows = band[: rest * (side * 3 + 1)]
        tail = deflate.compress(tail_rows) + deflate.flush(zlib.Z_FULL_FLUSH)
        checksum = zlib.adler32(tail_rows, checksum)
    # 78 DA: zlib header (deflate, best compression); 03 00: an empty final block.
    idat = b"\x78\xda" + packed * bands + tail + b"\x03\x00" + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + IEND


def fit(width: float, height: float) -> tuple[int, int]:
    """A result's size: within MAX_SIDE on each side (scaled down keeping the aspect), at least MIN_SIDE."""
    shrink = min(1.0, MAX_SIDE / max(width, height, 1))
    return (max(MIN_SIDE, min(MAX_SIDE, int(width * shrink))), max(MIN_SIDE, min(MAX_SIDE, int(height * shrink))))


def side_of(value: Any) -> int:
    """A requested width or height as the image route will render it (the body was checked)."""
    try:
        side = int(value) if value is not None else 1024
    except (TypeError, ValueError):
        side = 1024
    return min(MAX_SIDE, max(MIN_SIDE, side))

