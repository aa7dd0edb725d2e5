"""The libvips renditions: the inline thumbnail and the in-chat app's view, from every kind of image."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import pytest
from PIL import Image

from app.pixazo.renders import huge_png, render_png
from app.storage.renditions import (
    THUMB_MAX_BYTES,
    RenditionError,
    make_display,
    make_thumbnail,
)


def encoded(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple), value
    return tuple(int(v) for v in value)


def near(value: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(value, expected, strict=True))


def cut_out(side: int = 1024) -> bytes:
    """A background removal's result: an opaque red disc on a fully transparent square."""
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    disc = Image.new("RGBA", (side // 2, side // 2), (200, 20, 20, 255))
    img.paste(disc, (side // 4, side // 4))
    return encoded(img)


def test_a_real_size_png_gives_a_512_px_jpeg_under_the_budget_from_bytes_and_from_a_file(tmp_path: Path) -> None:
    data = render_png("a harbour", 7, 1024, 1024)
    (tmp_path / "a.png").write_bytes(data)
    for source in (data, tmp_path / "a.png"):
        thumb = make_thumbnail(source)
        assert len(thumb) <= THUMB_MAX_BYTES
        img = opened(thumb)
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (512, 512))


def test_the_thumbnail_keeps_the_picture(tmp_path: Path) -> None:
    # Left half dark blue, right half yellow: the thumbnail must show the same halves.
    img = Image.new("RGB", (1536, 1024), (20, 30, 160))
    img.paste(Image.new("RGB", (768, 1024), (240, 220, 30)), (768, 0))
    thumb = opened(make_thumbnail(encoded(img)))
    assert thumb.size == (512, 341)
    assert near(pixel(thumb, (60, 170)), (20, 30, 160))
    assert near(pixel(thumb, (450, 170)), (240, 220, 30))


def test_transparency_shows_on_a_checkerboard_and_the_subject_stays() -> None:
    thumb = opened(make_thumbnail(cut_out()))
    assert thumb.mode == "RGB"
    # The first two 16 px squares of the thumbnail: white, then grey; not black.
    assert near(pixel(thumb, (3, 3)), (255, 255, 255), 12)
    assert near(pixel(thumb, (19, 3)), (204, 204, 204), 12)
    assert near(pixel(thumb, (256, 256)), (200, 20, 20))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "I;16", "RGB"])
def test_every_pixel_layout_gives_an_rgb_jpeg(mode: str) -> None:
    base = Image.linear_gradient("L").resize((800, 600))
    img = base.convert(mode) if mode != "I;16" else base.point(lambda v: v * 256).convert("I;16")
    thumb = opened(make_thumbnail(encoded(img)))
    assert thumb.format == "JPEG"
    assert thumb.size == (512, 384)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_uploads_thumbnail_too(fmt: str) -> None:
    img = Image.new("RGB", (1200, 900), (10, 120, 200))
    thumb = opened(make_thumbnail(encoded(img, fmt, quality=90)))
    assert thumb.size == (512, 384)


def test_the_worst_case_noise_is_squeezed_under_the_budget() -> None:
    noisy = Image.merge("RGB", [Image.effect_noise((1536, 1536), 120) for _ in range(3)])
    thumb = make_thumbnail(encoded(noisy, compress_level=1))
    assert len(thumb) <= THUMB_MAX_BYTES
    assert max(opened(thumb).size) <= 512


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_a_rendition_error(damage: str) -> None:
    data = render_png("a castle", 1, 512, 512)
    broken = {"truncated": data[: len(data) // 2], "garbage": b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000,
              "empty": b""}[damage]
    with pytest.raises(RenditionError):
        make_thumbnail(broken)


def test_more_pixels_than_the_limit_are_refused_before_decoding() -> None:
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 4000 * 4000  # the process-wide limit the server sets at start-up
    try:
        started = time.process_time()
        with pytest.raises(RenditionError, match="more than 16000000"):
            make_thumbnail(huge_png(6000))
        assert time.process_time() - started < 0.5  # a decode of 36 M pixels would take seconds
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_the_display_is_a_jpeg_or_a_png_that_keeps_its_transparency() -> None:
    data, mime = make_display(render_png("a meadow", 3, 1536, 1024))
    img = opened(data)
    assert (mime, img.format, img.size) == ("image/jpeg", "JPEG", (1024, 683))
    data, mime = make_display(cut_out(1024))
    img = opened(data)
    assert (mime, img.format, img.mode, img.size) == ("image/png", "PNG", "RGBA", (1024, 1024))
    assert pixel(img, (2, 2))[3] == 0
    assert pixel(img, (512, 512)) == (200, 20, 20, 255)


def test_a_rendition_writes_nothing_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # libvips reports "threadpool completed" at INFO for every pipeline: not a line per image.
    with caplog.at_level(logging.DEBUG):
        make_thumbnail(render_png("a lake", 4, 1024, 1024))
        make_display(render_png("a lake", 4, 1024, 1024))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pyvips")] == []
