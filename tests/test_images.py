"""PNG and .npy images for predict: every PNG filter type decodes; bad files get one-line errors."""

import struct
import zlib

import numpy as np
import pytest

from mnistlab.images import ImageError, decode_png, png_bytes, read_image


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode(pixels: np.ndarray, filters: list[int], colour: int = 0) -> bytes:
    """A PNG whose scanline y uses filter filters[y % len(filters)] (the reference the decoder must undo)."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1).astype(int)
    bpp = {0: 1, 2: 3}[colour]
    raw = b""
    for y in range(height):
        kind, line, up = filters[y % len(filters)], rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        out = []
        for x, value in enumerate(line):
            left = line[x - bpp] if x >= bpp else 0
            corner = up[x - bpp] if x >= bpp else 0
            pred = [0, left, up[x], (left + up[x]) // 2, paeth(left, up[x], corner)][kind]
            out.append((value - pred) & 0xFF)
        raw += bytes([kind]) + bytes(out)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    width = pixels.shape[1]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_every_filter_type_decodes():
    image = np.random.default_rng(0).integers(0, 256, (9, 7), dtype=np.uint8)
    assert np.array_equal(decode_png(encode(image, [0, 1, 2, 3, 4])), image)
    assert np.array_equal(decode_png(png_bytes(image)), image)  # the report's writer round-trips


def test_rgb_becomes_grey():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)
    rgb[1, 1] = (255, 0, 0)
    grey = decode_png(encode(rgb, [4, 1], colour=2))
    assert grey[0, 0] == 255 and grey[0, 1] == 0 and grey[1, 1] == round(0.299 * 255)


def test_read_image_polarity_and_resize(tmp_path):
    digit = np.zeros((56, 56), np.uint8)
    digit[10:40, 25:30] = 255
    (tmp_path / "d.png").write_bytes(png_bytes(255 - digit))  # dark on light, twice the size
    image = read_image(tmp_path / "d.png")
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image[10, 13] == 1.0 and image[0, 0] == 0.0  # inverted to MNIST's white on black


@pytest.mark.parametrize("name,data,message", [
    ("x.png", b"GIF89a...", "not a PNG file"),
    ("x.png", b"\x89PNG\r\n\x1a\n", "truncated PNG"),
    ("x.txt", b"hello", "unsupported image type '.txt'"),
])
def test_bad_files_are_named(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=message) as info:
        read_image(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_image_data(tmp_path):
    data = png_bytes(np.zeros((28, 28), np.uint8))
    start = data.index(b"IDAT") + 4
    (tmp_path / "c.png").write_bytes(data[:start] + b"\x00\x01garbage" + data[start + 9:])
    with pytest.raises(ImageError, match="corrupt PNG image data"):
        read_image(tmp_path / "c.png")
