"""Hypothesis strategies for the fuzzer's inputs: random bytes, and seed files bent out of shape
(byte flips, truncations, splices, repeated chunks, header fields set to extreme values)."""

from __future__ import annotations

import struct
import zlib

from hypothesis import strategies as st

# Values that break size, count and duration arithmetic: zero, one, sign and width edges.
EXTREMES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 100_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
# Places headers keep sizes, counts and durations: PNG, JPEG, GIF, WebP, TIFF, RIFF/WAV, MP4, Matroska, Ogg, FLAC.
MARKERS = (b"IHDR", b"acTL", b"fcTL", b"IDAT", b"\xff\xc0", b"\xff\xc2", b"\xff\xda", b"\xff\xdd", b"GIF8", b"\x2c\x00",
           b"VP8 ", b"VP8L", b"VP8X", b"ANMF", b"II*\x00", b"fmt ", b"data", b"RIFF", b"mvhd", b"tkhd", b"mdhd",
           b"stts", b"stsz", b"stsc", b"stco", b"ctts", b"elst", b"avcC", b"\x1aE\xdf\xa3", b"\x18S\x80g",
           b"\x1fC\xb6u", b"\xa3", b"OggS", b"fLaC", b"OpusHead", b"ID3", b"\xff\xfb", b"LIST", b"avih", b"strh")


def _position(draw, data: bytearray, end: int | None = None) -> int:
    return draw(st.integers(0, max(0, (len(data) if end is None else min(end, len(data))) - 1)))


def _flip(draw, data, seeds):
    if data:
        data[_position(draw, data)] ^= draw(st.integers(1, 255))
    return data


def _truncate(draw, data, seeds):
    return data[:_position(draw, data)]


def _splice(draw, data, seeds):
    other = draw(st.sampled_from(seeds))
    cut, start = _position(draw, data), draw(st.integers(0, max(0, len(other) - 1)))
    return data[:cut] + other[start:start + draw(st.integers(0, 4096))]


def _insert(draw, data, seeds):
    cut = _position(draw, data)
    return data[:cut] + draw(st.binary(min_size=1, max_size=64)) + data[cut:]


def _delete(draw, data, seeds):
    cut = _position(draw, data)
    return data[:cut] + data[cut + draw(st.integers(1, 256)):]


def _repeat(draw, data, seeds):
    cut = _position(draw, data)
    chunk = data[cut:cut + draw(st.integers(1, 512))]
    return data[:cut] + chunk * draw(st.integers(2, 64)) + data[cut:]


def _put_int(draw, data: bytearray, at: int) -> bytearray:
    width, order = draw(st.sampled_from([(2, ">"), (2, "<"), (4, ">"), (4, "<"), (1, ">")]))
    value = draw(st.sampled_from(EXTREMES)) & ((1 << (8 * width)) - 1)
    packed = struct.pack(order + {1: "B", 2: "H", 4: "I"}[width], value)
    data[at:at + width] = packed
    return data


def _header_lie(draw, data, seeds):
    """An extreme number written in the first bytes, where most formats keep their header."""
    return _put_int(draw, data, _position(draw, data, end=64)) if data else data


def _marker_lie(draw, data, seeds):
    """An extreme number written just after a structure's tag (sizes, durations, dimensions)."""
    found = [i for m in MARKERS for i in _find_all(data, m)]
    if not found:
        return _header_lie(draw, data, seeds)
    at = draw(st.sampled_from(found)) + draw(st.integers(0, 40))
    return _put_int(draw, data, min(at, max(0, len(data) - 1)))


def _find_all(data: bytes, marker: bytes, limit: int = 8) -> list[int]:
    found, start = [], 0
    while len(found) < limit:
        i = data.find(marker, start)
        if i < 0:
            break
        found.append(i)
        start = i + 1
    return found


OPERATIONS = (_flip, _truncate, _splice, _insert, _delete, _repeat, _header_lie, _marker_lie)


def fix_png_checksums(data: bytes) -> bytes:
    """Recompute every PNG chunk's CRC, so a mutation gets past the checksum to the parser."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, at = bytearray(data[:8]), 8
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        end = at + 8 + length
        if end + 4 > len(data):
            break
        out += data[at:end] + struct.pack(">I", zlib.crc32(data[at + 4:end]))
        at = end + 4
    return bytes(out + data[at:])


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        data = bytearray(draw(st.sampled_from(OPERATIONS))(draw, data, seeds))
    if draw(st.booleans()):
        return fix_png_checksums(bytes(data))
    return bytes(data)


def inputs(seeds: list[bytes]):
    """What the fuzzer feeds a decoder: mostly mutated seeds, some plain random bytes."""
    return st.one_of(mutated(seeds), st.binary(max_size=4096), st.sampled_from(seeds))
