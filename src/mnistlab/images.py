"""Greyscale images in and out: PNG writing for the report (numpy and zlib), reading for predict (Pillow).

>>> write_png(Path("digit.png"), x_test[0])          # (28, 28) uint8
>>> read_image(Path("digit.png"))                     # (28, 28) float32 in [0, 1], MNIST polarity

Reading never trusts a file's header: an image wider or taller than ``MAX_SIDE`` is refused before
a pixel is decoded (a 389 KB PNG can declare 20000x20000 pixels, 400 MB as grey and 1.6 GB as RGBA),
and a ``.npy`` file is opened as a memory map so its shape and dtype are checked before it is read.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import ImageError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
MAX_SIDE = 4096  # pixels per side: a photo or scan of a digit is smaller; 4096x4096 RGBA decodes to 64 MB


def png_bytes(image: np.ndarray) -> bytes:
    """A greyscale PNG of a (height, width) uint8 array (filter 0, so the report's bytes are stable)."""
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
    """(height, width) uint8 grey from PNG bytes: any bit depth, colour type or interlacing Pillow reads.

    Colour becomes grey by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B); alpha is ignored.
    """
    if not data.startswith(SIGNATURE):
        raise ImageError(f"{name}: not a PNG file")
    return _decode(io.BytesIO(data), name)


def _decode(source: BinaryIO, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            image = Image.open(source, formats=["PNG"])
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: the image is over {MAX_SIDE}x{MAX_SIDE} pixels; crop or shrink it "
                         "around the digit (predict uses 28x28)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(f"{name}: truncated PNG (no readable header: {_one_line(exc)})") from None
    with image:
        width, height = image.size  # from the header alone: nothing decoded yet
        if width > MAX_SIDE or height > MAX_SIDE or not width or not height:
            raise ImageError(f"{name}: the image is {width}x{height} pixels; at most {MAX_SIDE}x{MAX_SIDE} is "
                             "read: crop or shrink it around the digit (predict uses 28x28)")
        try:
            image.load()
            return _grey(image)
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
            raise ImageError(f"{name}: corrupt PNG image data ({_one_line(exc)})") from None


def _grey(image) -> np.ndarray:
    """(height, width) uint8 from a decoded Pillow image of any mode."""
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey: scale, do not clip to 255
        return np.rint(np.asarray(image, dtype=np.float64) * (255 / 65535)).clip(0, 255).astype(np.uint8)
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # Pillow converts a transparent palette to grey through RGBA only
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_npy(path: Path) -> np.ndarray:
    """A (height, width) float32 array in [0, 1] from a ``.npy`` holding numbers in [0, 1] or [0, 255].

    Integers, or floats above 1, are read as 0-255 pixels. Strings, objects (pickles), no values or
    more than ``MAX_SIDE`` pixels a side are refused from the header; NaN, infinity or negative
    values once read.
    """
    shape, dtype = _npy_header(path)
    if dtype.kind not in "biuf":
        raise ImageError(f"{path}: holds {dtype} values; an image is an array of numbers "
                         "(uint8 0-255 or floats in [0, 1])")
    if len(shape) != 2:
        raise ImageError(f"{path}: an image array must be 2-D (height, width), got shape {shape}")
    if not all(shape) or max(shape) > MAX_SIDE:
        raise ImageError(f"{path}: an image array must be 1x1 to {MAX_SIDE}x{MAX_SIDE}, got shape {shape}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: truncated or damaged .npy file ({_one_line(exc)})") from None
    image = array.astype(np.float32)
    if not np.isfinite(image).all():
        raise ImageError(f"{path}: holds NaN or infinite values; pixels must be numbers in [0, 1] or [0, 255]")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise ImageError(f"{path}: pixel values run from {low:g} to {high:g}; give them in [0, 1] or [0, 255]")
    return image / (255.0 if array.dtype.kind in "iu" or high > 1 else 1.0)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy file's header, before its values are read."""
    from numpy.lib import format as npy
    with open(path, "rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ImageError(f"{path}: not a NumPy .npy file (it does not start with NumPy's header); "
                             "save the image with numpy.save")
        handle.seek(0)
        try:
            version = npy.read_magic(handle)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(handle)
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise ImageError(f"{path}: damaged .npy header ({_one_line(exc)})") from None
    return tuple(shape), dtype


def read_image(path: Path, size: int = 28) -> np.ndarray:
    """A (size, size) float32 image in [0, 1], white digit on black like MNIST.

    Reads ``.png`` (through Pillow) or ``.npy`` (see :func:`read_npy`); a darker-on-lighter image
    (mean above one half) is inverted; another size is resized by nearest neighbour.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such image file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file; give a .png or a .npy file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise ImageError(f"{path}: unsupported image type {path.suffix!r}; give a .png or a .npy file")
    try:
        image = read_npy(path) if suffix == ".npy" else _read_png(path)
    except PermissionError:
        raise ImageError(f"{path}: cannot be read (permission denied)") from None
    if image.mean() > 0.5:  # dark digit on a light page: MNIST is the other way round
        image = 1.0 - image
    if image.shape != (size, size):
        rows = np.arange(size) * image.shape[0] // size
        cols = np.arange(size) * image.shape[1] // size
        image = image[rows][:, cols]
    return np.ascontiguousarray(image, dtype=np.float32)


def _read_png(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        if handle.read(len(SIGNATURE)) != SIGNATURE:
            raise ImageError(f"{path}: not a PNG file")
        handle.seek(0)
        return _decode(handle, str(path)).astype(np.float32) / 255.0
