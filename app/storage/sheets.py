"""A contact sheet: the thumbnails of a batch (variations) in one small grid, the single inline image of
its answer, within the inline thumbnail's budget. Made with Pillow in the image pool."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from app.storage.renditions import THUMB_MAX_BYTES, THUMB_MAX_SIDE

SHEET_GAP = 4  # pixels between cells
SHEET_BACKGROUND = (236, 236, 234)
LABEL_SIZE = 22


def make_contact_sheet(cells: list[tuple[bytes | None, str]]) -> bytes:
    """A JPEG grid of the cells (a thumbnail, or None for an image that is not there, and its label,
    e.g. `#12` or `#13 failed`), two columns, at most THUMB_MAX_SIDE px on its long side and at most
    THUMB_MAX_BYTES. Runs in the image pool, never on the event loop."""
    columns = 1 if len(cells) == 1 else 2
    rows = (len(cells) + columns - 1) // columns
    cell = (THUMB_MAX_SIDE - SHEET_GAP * (columns - 1)) // columns
    sheet = Image.new("RGB", (columns * cell + SHEET_GAP * (columns - 1), rows * cell + SHEET_GAP * (rows - 1)),
                      SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(LABEL_SIZE)
    for index, (thumb, label) in enumerate(cells):
        x, y = (index % columns) * (cell + SHEET_GAP), (index // columns) * (cell + SHEET_GAP)
        if thumb is not None:
            with Image.open(io.BytesIO(thumb)) as img:
                img.draft("RGB", (cell, cell))
                picture = img.convert("RGB")
            picture.thumbnail((cell, cell))
            sheet.paste(picture, (x + (cell - picture.width) // 2, y + (cell - picture.height) // 2))
        else:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(208, 208, 204))
        # The label on a dark band, readable on any picture: the agent maps each cell to its id by it.
        box = draw.textbbox((x + 8, y + 6), label, font=font)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(20, 20, 22))
        draw.text((x + 8, y + 6), label, font=font, fill=(255, 255, 255))
    while True:
        for quality in (80, 70, 60, 50, 40):
            out = io.BytesIO()
            sheet.save(out, format="JPEG", quality=quality)
            if out.tell() <= THUMB_MAX_BYTES:
                return out.getvalue()
        sheet = sheet.reduce(2)  # pictures of pure noise only: smaller, never over the budget
