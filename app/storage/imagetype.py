"""What an image is, from its first bytes: format and pixel size, without decoding a pixel.

PNG: the signature and the IHDR chunk; JPEG: the markers up to the first start-of-frame; WebP: the
RIFF header and its VP8, VP8L or VP8X chunk. The pixel cap is checked on these numbers, before any
decoder could be asked to allocate them. A PNG's end is checked too (its last chunk must be IEND),
which catches a download cut short at no cost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from app.errors import DownloadError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
# How far into a file its size must be found. A JPEG may carry EXIF and ICC segments (64 KB each at
# most) before its frame header; a Pixazo PNG or WebP says it in its first 30 bytes.
MAX_HEADER_BYTES = 512 * 1024

# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are not frames.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field


@dataclass(frozen=True)
class ImageHeader:
    format: str  # PNG, JPEG, WEBP
    mime: str
    ext: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _header(fmt: str, width: int, height: int) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise DownloadError("the downloaded file is not an image (it says it has no pixels)")
    mime, ext = {"PNG": ("image/png", ".png"), "JPEG": ("image/jpeg", ".jpg"),
                 "WEBP": ("image/webp", ".webp")}[fmt]
    return ImageHeader(fmt, mime, ext, width, height)


def sniff(head: bytes) -> ImageHeader | None:
    """The header of the image that starts with `head`, or None when more bytes are needed.

    Raises DownloadError for anything that is not a PNG, JPEG or WebP image."""
    if head.startswith(PNG_SIGNATURE) or PNG_SIGNATURE.startswith(head[:8]):
        return _png(head)
    if head[:2] == b"\xff\xd8" or (len(head) < 2 and b"\xff\xd8".startswith(head)):
        return _jpeg(head)
    if len(head) < 12:
        if b"RIFF".startswith(head[:4]):
            return None
        raise DownloadError("the downloaded file is not an image")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    raise DownloadError("the downloaded file is not an image")


def _png(head: bytes) -> ImageHeader | None:
    if len(head) < 24:
        return None
    length, kind = struct.unpack(">I4s", head[8:16])
    if kind != b"IHDR" or length != 13:
        raise DownloadError("the downloaded file is not an image (a PNG without its header)")
    width, height = struct.unpack(">II", head[16:24])
    return _header("PNG", width, height)


def _jpeg(head: bytes) -> ImageHeader | None:
    i = 2
    while True:
        if i + 4 > len(head):
            return None
        if head[i] != 0xFF:
            raise DownloadError("the downloaded file is not an image (a damaged JPEG)")
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise DownloadError("the downloaded file is not an image (a JPEG without a frame)")
        (length,) = struct.unpack(">H", head[i + 2:i + 4])
        if length < 2:
            raise DownloadError("the downloaded file is not an image (a damaged JPEG)")
        if marker in _SOF:
            if i + 9 > len(head):
                return None
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return _header("JPEG", width, height)
        i += 2 + length


def _webp(head: bytes) -> ImageHeader | None:
    if len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise DownloadError("the downloaded file is not an image (a damaged WebP)")
        width, height = struct.unpack("<HH", head[26:30])
        return _header("WEBP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if head[20] != 0x2F:
            raise DownloadError("the downloaded file is not an image (a damaged WebP)")
        bits = int.from_bytes(head[21:25], "little")
        return _header("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return _header("WEBP", width, height)
    raise DownloadError("the downloaded file is not an image (an unknown WebP kind)")


def check_end(header: ImageHeader, tail: bytes) -> None:
    """The cheap integrity check on the last bytes: a PNG must end with its IEND chunk."""
    if header.format == "PNG" and not tail.endswith(PNG_END):
        raise DownloadError("the downloaded PNG is incomplete (it does not end with IEND)")
