"""PNG files written byte by byte, for what PIL cannot save: 16-bit RGB(A) and grey-alpha
pictures, and headers that claim a size the file does not hold."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: PNG colour type of each channel count: grey, grey + alpha, RGB, RGBA
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """The signature and IHDR chunk of a PNG of that size."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr)


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG of ``pixels`` ((H, W, C) integers in 0..65535, C = 1..4), unfiltered."""
    h, w, c = pixels.shape
    rows = pixels.astype(">u2").reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    body = png_header(w, h, bit_depth=16, colour_type=COLOUR_TYPES[c])
    path.write_bytes(body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def write_bomb_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` RGB pixels."""
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path.write_bytes(png_header(width, height) + idat + chunk(b"IEND", b""))
    return path
