"""Fashion-MNIST: the registry entry, the Debian-package source (a tiny fake .deb built here: an
``ar`` archive holding data.tar.xz with gzip'd IDX files), the CLI, and class names in the report.
The one test on the real set uses the cache if present and is skipped otherwise."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mnistlab import data
from mnistlab.data import DataError, DebPackage, ar_members
from mnistlab.report.figures import confusion, mistakes_grid
from test_data import assert_same, cache, fake_arrays, fake_info, idx_bytes, register  # noqa: F401 - fixtures

FOLDER = "usr/share/datasets/fake-fashion/"
CLI = [sys.executable, "-c", "from mnistlab.cli import main; main()"]


def ar_archive(members: dict[str, bytes]) -> bytes:
    """The reference ar writer (as dpkg-deb writes a .deb): 60-byte headers, even offsets."""
    out = b"!<arch>\n"
    for name, payload in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}".encode() + b"`\n"
        out += header + payload + (b"\n" if len(payload) % 2 else b"")
    return out


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as t:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def fake_deb(path: Path, arrays: dict[str, np.ndarray], skip: str | None = None) -> Path:
    files = {f"./{FOLDER}{file}": gzip.compress(idx_bytes(arrays[key]), mtime=0)
             for key, file in data.MNIST_IDX_FILES.items() if key != skip}
    files["./usr/share/doc/fake-fashion/copyright"] = b"MIT"
    path.write_bytes(ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({"./control": b"Package: x\n"}),
                                 "data.tar.xz": tar_xz(files)}))
    return path


def deb_source(deb: Path) -> DebPackage:
    return DebPackage("fake-deb", "dataset-fake-fashion", FOLDER, download=lambda package, dest: deb)


def test_deb_source_reads_the_idx_files(cache, register):  # noqa: F811
    arrays = fake_arrays(3)
    register(fake_info(arrays, [deb_source(fake_deb(cache / "fake.deb", arrays))]))
    data.fetch("fake")
    (xa, ya), (xt, yt) = data.load_arrays("fake")
    assert_same({"x_train": xa, "y_train": ya, "x_test": xt, "y_test": yt}, arrays)
    assert data.info("fake")["source"] == "fake-deb"


def test_ar_reader_members_and_odd_sizes():
    members = {"debian-binary": b"2.0\n", "odd": b"abc", "even/": b"abcd"}
    assert ar_members(ar_archive(members), "x") == {"debian-binary": b"2.0\n", "odd": b"abc", "even": b"abcd"}


@pytest.mark.parametrize("make, message", [
    (lambda p, a: p.write_bytes(b"PK\x03\x04 not an ar") and p, "not a .deb (ar) archive"),
    (lambda p, a: p.write_bytes(ar_archive({"debian-binary": b"2.0\n"})) and p, "no data.tar.* member"),
    (lambda p, a: fake_deb(p, a, skip="y_test"), "has no usr/share/datasets/fake-fashion/t10k-labels-idx1-ubyte.gz"),
    (lambda p, a: p.write_bytes(ar_archive({"data.tar.xz": b"not xz"})) and p, "data.tar.xz is unreadable"),
])
def test_bad_debs_are_one_line_errors_naming_the_source(cache, register, make, message):  # noqa: F811
    arrays = fake_arrays(4)
    register(fake_info(arrays, [deb_source(make(cache / "bad.deb", arrays))]))
    with pytest.raises(DataError) as info:
        data.fetch("fake")
    assert "fake-deb: " in str(info.value) and message in str(info.value) and "\n" not in str(info.value)


def test_deb_with_other_arrays_fails_the_hash_check(cache, register):  # noqa: F811
    register(fake_info(fake_arrays(5), [deb_source(fake_deb(cache / "other.deb", fake_arrays(6)))]))
    with pytest.raises(DataError, match="fake-deb: x_train SHA-256"):
        data.fetch("fake")


def test_fashion_mnist_is_registered_as_keras_names_it():
    info = data.DATASETS["fashion_mnist"]
    assert info.classes[0] == "T-shirt/top" and info.classes[9] == "Ankle boot" and len(info.classes) == 10
    assert data.DATASETS["mnist"].classes == tuple("0123456789")
    assert [s.name for s in info.sources] == ["zalando", "zalando-github", "keras", "debian-dataset-fashion-mnist"]
    assert info.sources[0].base_url == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert info.sources[-1].package == "dataset-fashion-mnist"
    assert info.shapes == data.DATASETS["mnist"].shapes and set(info.sha256) == set(data.KEYS)


def test_cli_fetch_takes_the_name_or_dataset_and_info_lists_every_dataset(cache, register):  # noqa: F811
    import os
    env = dict(os.environ, MNISTLAB_DATA=str(cache / "cache"))
    info = subprocess.run([*CLI, "data", "info"], capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 0 and "name: mnist" in info.stdout and "name: fashion_mnist" in info.stdout
    assert "classes: T-shirt/top, Trouser, Pullover" in info.stdout
    both = subprocess.run([*CLI, "data", "fetch", "mnist", "--dataset", "fashion_mnist"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert both.returncode == 2 and "two datasets named" in both.stderr


def test_report_names_the_classes():
    names = list(data.DATASETS["fashion_mnist"].classes)
    fig = confusion("cnn", None, [[1 if i == j else 0 for j in range(10)] for i in range(10)], names)
    assert list(fig.data[0].x) == names and list(fig.data[0].y) == names
    assert list(confusion("mlp", None, [[1, 0], [0, 1]]).data[0].x) == ["0", "1"]
    images = np.zeros((3, 28, 28), np.uint8)
    html = mistakes_grid([{"index": 2, "true": 9, "predicted": 5, "confidence": 0.9}], images, Path("x.npz"), names)
    assert "Ankle boot → Sandal" in html
    assert "9 → 5" in mistakes_grid([{"index": 2, "true": 9, "predicted": 5, "confidence": 0.9}], images, Path("m"))
    assert "mnistlab data fetch fashion_mnist" in mistakes_grid([], None, Path("/c/fashion_mnist.npz"), names)


def test_real_fashion_mnist():
    if not data.cache_path("fashion_mnist").exists():
        pytest.skip("Fashion-MNIST not cached (`mnistlab data fetch fashion_mnist`)")
    (xa, ya), (xt, yt) = data.load_arrays("fashion_mnist")   # SHA-256 verified on read
    assert xa.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(ya).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert ya[:5].tolist() == [9, 0, 0, 3, 0]   # Zalando's first training labels: ankle boot, T-shirt, ...
