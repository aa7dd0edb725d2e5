"""What provenance costs per kept image, for the benchmark (app.ops.bench): the XMP packet, and the C2PA
manifest when the settings turn signing on. Figures, never assertions."""

from __future__ import annotations

import statistics
import time
from typing import Any

from app.settings import Settings
from app.storage.credentials import ContentCredentials
from app.storage.imagetype import sniff
from app.storage.provenance import Provenance, insert_xmp, xmp_packet


def provenance_costs(image: bytes, settings: Settings, repeat: int = 5) -> dict[str, Any]:
    """Per image (PNG or JPEG bytes): the median CPU milliseconds and the bytes added by the XMP packet, and by
    C2PA signing (None when PIXAZO_C2PA_CERT_FILE/KEY_FILE are not set). Blocking; C2PA reads the files."""
    header = sniff(image)
    if header is None or header.format not in ("PNG", "JPEG"):
        raise ValueError("provenance_costs takes a PNG or JPEG image")
    made = Provenance(1, "generate", "sdxl")
    xmp_s: list[float] = []
    marked = image
    for _ in range(repeat):
        started = time.process_time()
        marked = insert_xmp(image, header.format, xmp_packet(made))
        xmp_s.append(time.process_time() - started)
    out: dict[str, Any] = {"image_bytes": len(image), "xmp_ms": round(statistics.median(xmp_s) * 1000, 3),
                           "xmp_bytes": len(marked) - len(image), "c2pa_ms": None, "c2pa_bytes": None}
    credentials = ContentCredentials.from_settings(settings)
    if credentials is not None:
        sign_s: list[float] = []
        signed = marked
        for _ in range(repeat):
            started = time.process_time()
            signed = credentials.sign_bytes(marked, header.mime, made)
            sign_s.append(time.process_time() - started)
        out |= {"c2pa_ms": round(statistics.median(sign_s) * 1000, 3), "c2pa_bytes": len(signed) - len(marked)}
    return out
