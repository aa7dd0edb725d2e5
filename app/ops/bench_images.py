"""The benchmark's per-image figures: what one image costs each way, measured alone on one thread.

For each look of the simulator's images: our thumbnail (libvips), the same thumbnail made with
Pillow the best way we found before libvips (draft, reduce by the whole factor, JPEG under the same
budget), the plain keeper's whole keep (Pillow decode, bicubic thumbnail, JPEG; its fsync'd write
left out), and the sha256 both servers pay. CPU time of this process, median of several runs.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from app.pixazo.renders import IEND, rendered
from app.storage.renditions import THUMB_MAX_BYTES, THUMB_MAX_SIDE, make_thumbnail


@dataclass
class ImageCost:
    look: str
    png_bytes: int
    ms: dict[str, Any]  # piece -> CPU ms per image (or why it was not measured)


def pillow_thumbnail(data: bytes) -> bytes:
    """The thumbnail as made with Pillow before libvips (kept here as the yardstick, not served)."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (THUMB_MAX_SIDE, THUMB_MAX_SIDE))
        img.load()
        work: Image.Image = img if img.mode in ("RGB", "L") else img.convert("RGB")
        factor = max(work.size) // THUMB_MAX_SIDE
        if factor >= 2:
            work = work.reduce(factor)
        if max(work.size) > THUMB_MAX_SIDE:
            work.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), reducing_gap=None)
    for quality in (80, 70, 60, 50, 40):
        out = io.BytesIO()
        work.save(out, format="JPEG", quality=quality)
        if out.tell() <= THUMB_MAX_BYTES:
            break
    return out.getvalue()


def keeper_thumbnail(data: bytes) -> bytes:
    """The plain keeper's decode and thumbnail (app.ops.bench_reference.keep_plainly without the write)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        thumb = img.convert("RGB")
        thumb.thumbnail((512, 512))
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=80)
    return out.getvalue()


def cpu_ms(work: Callable[[], object], runs: int) -> float:
    work()  # warm: first-use costs (codec tables, libvips' start) are not per image
    samples = []
    for _ in range(runs):
        started = time.process_time()
        work()
        samples.append((time.process_time() - started) * 1000)
    return round(statistics.median(samples), 1)


def image_costs(looks: list[str], runs: int = 7,
                extra: Callable[[bytes], dict[str, Any]] | None = None) -> list[ImageCost]:
    """Per look, CPU ms per image for each piece; `extra(png)` adds more pieces (provenance)."""
    costs = []
    for look in looks:
        data = rendered(1024, 1024, 0, False, look) + IEND
        ms = {
            "thumbnail, libvips (ours)": cpu_ms(partial(make_thumbnail, data), runs),
            "thumbnail, Pillow (draft, reduce)": cpu_ms(partial(pillow_thumbnail, data), runs),
            "plain keeper's decode and thumbnail": cpu_ms(partial(keeper_thumbnail, data), runs),
            "sha256": cpu_ms(partial(hashlib.sha256, data), runs),
        }
        if extra is not None:
            ms.update(extra(data))
        costs.append(ImageCost(look, len(data), ms))
    return costs


def provenance_pieces(tmp: Path) -> Callable[[bytes], dict[str, float]]:
    """The cost of provenance per image: the XMP packet always; C2PA signing with a throwaway test
    certificate when c2pa-python is installed (the `c2pa` extra), else shown as not installed."""
    from app.ops.provenance_cost import provenance_costs
    from app.settings import Settings
    from app.storage.credentials import available

    settings = Settings.model_construct(c2pa_cert_file=None, c2pa_key_file=None)
    if available():
        from app.ops.testcert import make_test_certificate

        chain, key, _ = make_test_certificate(tmp)
        settings = Settings.model_construct(c2pa_cert_file=chain, c2pa_key_file=key)

    def pieces(data: bytes) -> dict[str, Any]:
        found = provenance_costs(data, settings, repeat=5)
        return {"provenance: XMP packet (inserted, no decode)": found["xmp_ms"],
                "provenance: C2PA manifest (signed)": found["c2pa_ms"] if found["c2pa_ms"] is not None
                else "no c2pa extra"}

    return pieces


def render_costs(costs: list[ImageCost]) -> str:
    pieces = list(costs[0].ms) if costs else []
    lines = ["| per image, one thread, CPU ms | " + " | ".join(f"{c.look} ({c.png_bytes / 1e6:.2f} MB PNG)"
                                                            for c in costs) + " |",
             "|---|" + "---|" * len(costs)]
    lines += [f"| {piece} | " + " | ".join(str(c.ms.get(piece, "-")) for c in costs) + " |" for piece in pieces]
    return "\n".join(lines)
