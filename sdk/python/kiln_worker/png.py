"""A small PNG writer (zlib from the standard library) and a test pattern."""

import os
import struct
import tempfile
import zlib


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_rgb(width, height, rgb):
    """Return PNG bytes for 8-bit RGB pixels (``width*height*3`` bytes, rows top down)."""
    if len(rgb) != width * height * 3:
        raise ValueError("want %d bytes of RGB, got %d" % (width * height * 3, len(rgb)))
    stride = width * 3
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        raw += rgb[y * stride:(y + 1) * stride]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw), 1))
            + _chunk(b"IEND", b""))


def write_atomic(path, data):
    """Write data to path through a temporary file and a rename, so that a
    crash never leaves half a file and a re-run replaces it whole."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def pattern(width, height, seed):
    """Return RGB bytes of a deterministic gradient for seed."""
    x = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF
    r0, g0, b0 = x & 0xFF, (x >> 8) & 0xFF, (x >> 16) & 0xFF
    r1, g1, b1 = (x >> 24) & 0xFF, (x >> 32) & 0xFF, (x >> 40) & 0xFF
    row = bytearray(width * 3)
    for px in range(width):
        row[3 * px] = r0 + (r1 - r0) * px // max(width, 1)
        row[3 * px + 1] = g0
    out = bytearray()
    for y in range(height):
        blue = b0 + (b1 - b0) * y // max(height, 1)
        row[2::3] = bytes([blue]) * width
        out += row
    return bytes(out)
