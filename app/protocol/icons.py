"""Icons for clients that show them (VS Code; Claude shows a globe): the server's, and one per tool
family, tiny SVGs sent as data URIs (tools/list is paid for in every conversation: each is ~150 bytes).
The gallery and the in-chat app use the server's icon too."""

from __future__ import annotations

from urllib.parse import quote

from mcp.types import Icon

_SVG = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>{}</svg>"
SHAPES = {
    # Hills under a sky: the server (a picture).
    "server": "<path d='M0 15l5-8 4 5 3-4 4 7z' fill='navy'/>",
    # A spark: making an image.
    "generate": "<path d='M8 1l2 5 5 2-5 2-2 5-2-5-5-2 5-2z' fill='navy'/>",
    # A brush stroke: editing one.
    "edit": "<path d='M2 14c3 0 4-2 4-4l6-8 2 2-8 6c0 3-2 4-4 4z' fill='navy'/>",
    # Lines of a list: the history.
    "history": "<path d='M2 3h12v2H2zm0 4h12v2H2zm0 4h8v2H2z' fill='navy'/>",
    # An hourglass: waiting for, or stopping, a call.
    "jobs": "<path d='M3 1h10v3L9 8l4 4v3H3v-3l4-4-4-4z' fill='navy'/>",
    # An arrow up: bringing an image in.
    "upload": "<path d='M8 1l5 6H9v5H7V7H3zM2 14h12v2H2z' fill='navy'/>",
}
FAMILIES = {
    "pix_generate": "generate", "pix_regenerate": "generate",
    "pix_upscale": "edit", "pix_remove_background": "edit", "pix_inpaint": "edit", "pix_outpaint": "edit",
    "list_generations": "history", "get_generation": "history", "pix_status": "history",
    "pix_wait": "jobs", "pix_cancel": "jobs",
    "pix_upload_link": "upload",
}
# The app-only tools (pix_app_*) have none: no person or model ever picks them from a list.


def svg(family: str) -> str:
    return _SVG.format(SHAPES[family])


def data_uri(family: str) -> str:
    return "data:image/svg+xml," + quote(svg(family), safe=" /=':")


def icon(family: str) -> Icon:
    # (The data URI says its type; a scalable SVG has no sizes: both optional fields are left out.)
    return Icon(src=data_uri(family))
