"""Provenance written into every kept image: an XMP packet saying that a trained model made it.

The packet carries IPTC's `DigitalSourceType` (trainedAlgorithmicMedia; an edit of a caller's own image
is compositeWithTrainedAlgorithmicMedia), the tool (xmp:CreatorTool), the model
(Iptc4xmpExt:AISystemUsed) and the generation id. It goes in at the byte level as the image streams into
storage, with no decode and no re-encode (Pillow writes XMP only by re-encoding the pixels, and no
well-kept library inserts a packet into a stream): a PNG gets an `iTXt` chunk right after its IHDR, a
JPEG an APP1 segment right after its SOI (and after a JFIF APP0, which must come first). A WebP is kept
as it came: its XMP lives in an extended header whose size is written before the image data, which a
stream cannot give. Uploads are kept as they came, never marked.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

from app import __version__

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"
COMPOSITE = IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
TOOL = "pixazo-mcp"
NAMESPACE = "https://github.com/pixazo-mcp/pixazo-mcp/ns/1.0/"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_PNG_IHDR_END = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes of data, its CRC
_JPEG_MAX_SEGMENT = 0xFFFF - 2
WRITES_XMP = ("PNG", "JPEG")

# What a row's `provenance` column says (NULL: nothing written, as for an upload or an older row).
XMP = "xmp"
XMP_C2PA = "xmp+c2pa"
C2PA = "c2pa"  # a WebP: signed, with no XMP
SIGNING_FAILED = "c2pa signing failed"


def written(xmp: bool, signed: bool, failure: str | None = None) -> str | None:
    """The row's `provenance`: what the stored image carries, and why it is unsigned when signing failed."""
    parts = [part for part, done in (("xmp", xmp), ("c2pa", signed)) if done]
    text = "+".join(parts) or None
    if failure is not None:
        text = f"{text or 'none'}; {SIGNING_FAILED}: {failure}"
    return text


@dataclass(frozen=True)
class ParentImage:
    """The stored image an edit was made from (its key in the BlobStore), for a C2PA ingredient."""

    name: str
    mime: str
    title: str


@dataclass(frozen=True)
class Provenance:
    """What one kept image says about where it came from."""

    generation_id: int
    operation: str  # generate, upscale, inpaint, ...
    model: str
    source_type: str = TRAINED  # an IPTC digital source type URI
    parent: ParentImage | None = None  # an edit's input image, when a stored copy exists

    @property
    def edit(self) -> bool:
        return self.operation != "generate"


def xmp_packet(p: Provenance) -> bytes:
    """The XMP packet (UTF-8) for an image; every value escaped."""
    fields = {
        "Iptc4xmpExt:DigitalSourceType": p.source_type,
        "Iptc4xmpExt:AISystemUsed": f"Pixazo {p.model}",
        "xmp:CreatorTool": f"{TOOL} {__version__}",
        "pixazo:GenerationId": str(p.generation_id),
        "pixazo:Operation": p.operation,
    }
    body = "".join(f"\n   <{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f'    xmlns:pixazo="{NAMESPACE}">{body}\n'
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def xmp_segment(fmt: str, packet: bytes) -> bytes:
    """The bytes that carry the packet in an image of format `fmt` (PNG or JPEG)."""
    if fmt == "PNG":
        # keyword, NUL, not compressed (0, 0), no language tag, no translated keyword: the XMP spec's form.
        return png_chunk(b"iTXt", PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet)
    payload = JPEG_XMP_HEADER + packet
    if len(payload) > _JPEG_MAX_SEGMENT:  # pragma: no cover - our packet is a few hundred bytes
        raise ValueError("the XMP packet is too large for one JPEG segment")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def insertion_point(fmt: str, head: bytes) -> int | None:
    """Where the segment goes in an image that starts with `head`; None until enough bytes are there.

    Raises ValueError for bytes that are not the format's start (the header check passed them already)."""
    if fmt == "PNG":
        if len(head) < _PNG_IHDR_END:
            return None
        if head[12:16] != b"IHDR":
            raise ValueError("a PNG without its IHDR first")
        return _PNG_IHDR_END
    if len(head) < 4:
        return None
    if head[:2] != b"\xff\xd8":
        raise ValueError("a JPEG without its SOI")
    if head[2:4] != b"\xff\xe0":  # no JFIF APP0: right after SOI
        return 2
    (length,) = struct.unpack(">H", head[4:6]) if len(head) >= 6 else (None,)
    if length is None:
        return None
    return 4 + length if len(head) >= 4 + length else None


def insert_xmp(data: bytes, fmt: str, packet: bytes) -> bytes:
    """`data` with the packet in it (the whole image in memory: the benchmark's and the tests' form)."""
    at = insertion_point(fmt, data)
    if at is None:
        raise ValueError("the image ends before its header")
    return data[:at] + xmp_segment(fmt, packet) + data[at:]


class Marked:
    """An image's chunks on their way to storage with the packet inserted (nothing else changes), and the
    size and sha256 of what was written. `packet` None passes the bytes through as they are."""

    def __init__(self, chunks: AsyncIterable[bytes], fmt: str, packet: bytes | None) -> None:
        self._chunks = chunks
        self._fmt = fmt
        self._packet = packet if fmt in WRITES_XMP else None
        self.size = 0
        self.hash = hashlib.sha256()

    @property
    def wrote_xmp(self) -> bool:
        return self._packet is not None

    def _out(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        self.hash.update(chunk)
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = b""
        placed = self._packet is None
        async for chunk in self._chunks:
            if placed:
                yield self._out(chunk)
                continue
            head += chunk
            assert self._packet is not None  # noqa: S101 - placed is False only with a packet
            at = insertion_point(self._fmt, head)
            if at is None:
                continue
            placed = True
            yield self._out(head[:at] + xmp_segment(self._fmt, self._packet) + head[at:])
        if not placed:
            raise ValueError("the image ended before its header")
