"""Greyscale images in and out, with numpy and zlib alone: PNG writing (report) and reading (predict).

>>> write_png(Path("digit.png"), x_test[0])          # (28, 28) uint8
>>> read_image(Path("digit.png"))                     # (28, 28) float32 in [0, 1], MNIST polarity
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import ImageError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (grey, RGB, grey+alpha, RGBA)


def png_bytes(image: np.ndarray) -> bytes:
    """A greyscale PNG of a (height, width) uint8 array."""
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))  # filter 0 per scanline

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png(path: Path, image: np.ndarray) -> Path:
    path.write_bytes(png_bytes(image))
    return path


def decode_png(data: bytes, name: str = "image") -> np.ndarray:
    """(height, width) uint8 grey from an 8-bit, non-interlaced PNG (grey, RGB, with or without alpha)."""
    if not data.startswith(SIGNATURE):
        raise ImageError(f"{name}: not a PNG file")
    pos, header, idat = len(SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if header is None or not idat:
        raise ImageError(f"{name}: truncated PNG (no header or no image data)")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise ImageError(f"{name}: PNG with bit depth {depth}, colour type {colour}, interlace {interlace}; "
                         "save it as an 8-bit, non-interlaced greyscale or RGB PNG")
    channels = CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        raise ImageError(f"{name}: corrupt PNG image data") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ImageError(f"{name}: truncated PNG image data")
    pixels = _unfilter(np.frombuffer(raw, np.uint8).reshape(height, stride + 1), channels)
    pixels = pixels.reshape(height, width, channels).astype(np.float32)
    grey = pixels[..., 0] if channels < 3 else pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-scanline filters (None, Sub, Up, Average, Paeth)."""
    out = np.zeros((rows.shape[0], rows.shape[1] - 1), np.int32)
    for y, row in enumerate(rows):
        kind, line = row[0], row[1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros_like(line)
        if kind in (0, 2):
            out[y] = (line + (up if kind == 2 else 0)) & 0xFF
            continue
        if kind not in (1, 3, 4):
            raise ImageError(f"unknown PNG filter type {kind}")
        for x in range(len(line)):  # Sub, Average and Paeth depend on the pixel just decoded
            left = out[y, x - bpp] if x >= bpp else 0
            corner = up[x - bpp] if x >= bpp else 0
            if kind == 1:
                pred = left
            elif kind == 3:
                pred = (left + up[x]) // 2
            else:
                p = left + up[x] - corner
                pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up[x] if pb <= pc else corner)
            out[y, x] = (line[x] + pred) & 0xFF
    return out.astype(np.uint8)


def read_image(path: Path, size: int = 28) -> np.ndarray:
    """A (size, size) float32 image in [0, 1], white digit on black like MNIST.

    Reads ``.png`` or ``.npy`` (a (28, 28) array, uint8 or already in [0, 1]); a darker-on-lighter
    image (mean above one half) is inverted; another size is resized by nearest neighbour.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ImageError(f"{path}: not a numpy array file ({exc})") from None
        if array.ndim != 2:
            raise ImageError(f"{path}: an image array must be 2-D (height, width), got shape {array.shape}")
        image = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 or array.max() > 1 else 1.0)
    elif path.suffix.lower() == ".png":
        image = decode_png(path.read_bytes(), str(path)).astype(np.float32) / 255.0
    else:
        raise ImageError(f"{path}: unsupported image type {path.suffix!r}; give a .png or a .npy file")
    if image.mean() > 0.5:  # dark digit on a light page: MNIST is the other way round
        image = 1.0 - image
    if image.shape != (size, size):
        rows = np.arange(size) * image.shape[0] // size
        cols = np.arange(size) * image.shape[1] // size
        image = image[rows][:, cols]
    return np.ascontiguousarray(image, dtype=np.float32)
