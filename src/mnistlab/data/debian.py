"""Offline: a dataset packaged by Debian, fetched with ``apt-get download`` into a scratch folder
(never installed) and read without extracting: a ``.deb`` is an ``ar`` archive whose ``data.tar.*``
holds the package's files, here the original IDX files under ``usr/share/datasets/NAME/``.

>>> DebPackage("debian", "dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/").load(info, work, print)

Debian recompressed the ``.gz`` files (their gzip headers differ from Zalando's), so only the
arrays' SHA-256 can be checked, as for every source.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .formats import _gunzip, parse_idx
from .info import DatasetInfo, Progress
from .sources import MNIST_IDX_FILES, PIP_TIMEOUT_S

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2 ("`\n")


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download PACKAGE`` into ``dest`` (a download, not an install); returns the ``.deb``."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataError(f"apt-get download {package}: apt-get not found (Debian and Ubuntu only)")
    try:
        done = subprocess.run([apt, "download", "-q", package], cwd=dest, capture_output=True, text=True,
                              timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"apt-get download {package}: {e}") from e
    debs = sorted(dest.glob("*.deb"))
    if done.returncode or len(debs) != 1:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"apt-get download {package} failed (exit {done.returncode}): {last}")
    return debs[0]


def ar_members(raw: bytes, where: str) -> dict[str, bytes]:
    """The files of an ``ar`` archive (a ``.deb``): name -> bytes."""
    if not raw.startswith(AR_MAGIC):
        raise DataError(f"{where}: not a .deb (ar) archive (starts {raw[:8]!r})")
    members, pos = {}, len(AR_MAGIC)
    while pos + AR_HEADER <= len(raw):
        header = raw[pos:pos + AR_HEADER]
        if header[58:60] != b"`\n":
            raise DataError(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")  # GNU ar ends names with '/'
        size = int(header[48:58].decode("ascii").strip() or 0)
        if pos + AR_HEADER + size > len(raw):
            raise DataError(f"{where}: truncated member {name!r} ({size} bytes)")
        members[name] = raw[pos + AR_HEADER:pos + AR_HEADER + size]
        pos += AR_HEADER + size + size % 2  # members start on even offsets
    return members


def _data_tar(deb: Path) -> tarfile.TarFile:
    members = ar_members(deb.read_bytes(), deb.name)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise DataError(f"{deb.name}: no data.tar.* member (has {sorted(members)})")
    try:
        return tarfile.open(fileobj=io.BytesIO(members.pop(name)))  # .xz, .gz, .bz2 or plain
    except tarfile.TarError as e:
        raise DataError(f"{deb.name}: {name} is unreadable ({e})") from e


@dataclass(frozen=True)
class DebPackage:
    """A Debian package holding the four gzip'd IDX files in ``folder`` (names as MNIST's).

    ``download(package, dest) -> .deb path`` is swappable, so tests never touch apt.
    """

    name: str
    package: str  # e.g. "dataset-fashion-mnist"
    folder: str  # inside the package, e.g. "usr/share/datasets/fashion-mnist/"
    files: dict[str, str] = field(default_factory=lambda: dict(MNIST_IDX_FILES))  # KEYS -> file
    download: Callable[[str, Path], Path] = apt_download

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]:
        say(f"apt-get download {self.package}")
        deb = self.download(self.package, work)
        wanted = {self.folder.strip("/") + "/" + file: key for key, file in self.files.items()}
        arrays = {}
        with _data_tar(deb) as tar:
            for member in tar:
                key = wanted.get(member.name.removeprefix("./")) if member.isfile() else None
                if key is not None:
                    where = f"{deb.name}:{member.name}"
                    arrays[key] = parse_idx(_gunzip(tar.extractfile(member).read(), where), where)  # type: ignore[union-attr]
        if missing := sorted(set(wanted) - {self.folder.strip("/") + "/" + self.files[k] for k in arrays}):
            raise DataError(f"{deb.name}: has no {', '.join(missing)}")
        return arrays
