"""Valid files whose headers lie: the sizes a decoder allocates for, written by hand."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, mode: str = "L") -> bytes:
    """A small real PNG whose IHDR says ``width`` x ``height`` (checksum fixed, so Pillow believes
    it): the image data ends long before that many pixels."""
    buf = io.BytesIO()
    Image.new(mode, (8, 8), 128).save(buf, "PNG")
    data = buf.getvalue()
    ihdr = data[8 + 8: 8 + 8 + 13]  # signature, then the IHDR chunk's length and type
    body = struct.pack(">II", width, height) + ihdr[8:]
    return data[:8] + png_chunk(b"IHDR", body) + data[8 + 25:]
