"""predict and export against hostile input: bad arrays and images, image bombs, output folders that
cannot or should not be written; and ONNX export checked with onnxruntime against the torch model."""

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from conftest import MLP, tiny_study
from mnistlab.api import export, load_model, load_study, predict, run
from mnistlab.errors import ImageError, ReportError
from mnistlab.images import read_image
from mnistlab.store import Store

CNN = ["Conv2D(4, (3, 3), activation='relu')", "MaxPooling2D()", "Flatten()", "Dense(10, activation='softmax')"]
LOGITS = ["Dense(32, activation='relu')", "Dense(10)"]  # no softmax: the model outputs logits


@pytest.fixture
def mnistlab(monkeypatch, capsys):
    """mnistlab(*args) -> (exit status, stdout, stderr) of the command run in this process through cli.main."""
    from mnistlab import cli

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["mnistlab", *map(str, args)])
        try:
            cli.main()  # anything but a MnistlabError escapes as itself, with its traceback
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return call


def one_line_error(done) -> str:
    code, out, err = done
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, out, err)
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    """A store with one done run per model: {'mlp', 'cnn', 'logits'} -> run id (1 epoch on 2,000 images)."""
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(tiny_study(models={"mlp": MLP, "cnn": CNN}, epochs=1)))
    run(load_study(path))
    logits = folder / "logits.toml"  # a linear last layer trains with from_logits=True, in a study of its own
    logits.write_text(textwrap.dedent(tiny_study(name="tiny-logits", models={"logits": LOGITS}, epochs=1)).replace(
        "[train]\n", '[train]\nloss = "CategoricalCrossentropy(from_logits=True)"\n'))
    run(load_study(logits))
    store = Store.for_study(path)
    runs = store.runs(study="tiny") + store.runs(study="tiny-logits")
    ids = {r["model"]: r["id"] for r in runs}
    assert all(r["status"] == "done" for r in runs) and len(ids) == 3
    return store, ids, folder / "mnistlab.db"


# ---------------------------------------------------------------- export -o: where it may write

def test_export_onto_a_file_or_under_a_file_is_one_line(trained, tmp_path, mnistlab):
    _, ids, db = trained
    (tmp_path / "taken").write_text("mine")
    for target in (tmp_path / "taken", tmp_path / "taken" / "sub" / "dir"):
        message = one_line_error(mnistlab("export", ids["mlp"], "-o", target, "--store", db))
        assert f"{target}: {tmp_path / 'taken'} is a file" in message, message
    assert (tmp_path / "taken").read_text() == "mine"


def test_export_into_a_read_only_folder_is_one_line(trained, tmp_path):
    _, ids, db = trained
    prefix = []
    if os.geteuid() == 0:  # root ignores permission bits unless it drops CAP_DAC_OVERRIDE
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: a read-only folder cannot be made")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    code = textwrap.dedent(f"""\
        from mnistlab.api import Store, export
        from mnistlab.errors import ReportError
        for target in [{str(locked)!r}, {str(locked / "inside")!r}]:
            try:
                export(Store({str(db)!r}), {ids["mlp"]!r}, target)
            except ReportError as exc:
                print(exc)
        """)
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(str(locked)) for line in lines), lines
    assert "not writable" in lines[0] and "Permission denied" in lines[1]
    assert all("choose another -o folder" in line for line in lines) and not any(locked.iterdir())


def test_export_into_a_folder_with_files_needs_force(trained, tmp_path, mnistlab):
    _, ids, db = trained
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    assert mnistlab("export", ids["mlp"], "-o", out, "--store", db)[0] == 0
    (out / "spec.json").write_text("edited by hand")
    message = one_line_error(mnistlab("export", ids["cnn"], "-o", out, "--store", db))
    assert "already holds files" in message and "--force" in message
    assert (out / "spec.json").read_text() == "edited by hand"  # nothing overwritten
    assert mnistlab("export", ids["cnn"], "-o", out, "--force", "--store", db)[0] == 0
    assert ids["cnn"] in (out / "spec.json").read_text()


def test_export_refuses_an_unknown_format(trained, tmp_path):
    store, ids, _ = trained
    with pytest.raises(ReportError, match="'tflite' is unknown; use safetensors or onnx"):
        export(store, ids["mlp"], tmp_path / "out", format="tflite")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- predict: arrays that are not images

def bad_arrays(tmp_path):
    (tmp_path / "text.npy").write_text("7")
    np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "objects.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "empty.npy", np.zeros((0, 0), np.uint8))
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan, np.float32))
    np.save(tmp_path / "inf.npy", np.where(np.eye(28) > 0, np.inf, 0.0))
    np.save(tmp_path / "negative.npy", -np.ones((28, 28)))
    np.save(tmp_path / "huge.npy", np.zeros((5000, 2), np.uint8))
    return {"text.npy": "not a NumPy .npy file", "strings.npy": "holds <U1 values",
            "objects.npy": "holds object values", "empty.npy": "got shape (0, 0)",
            "nan.npy": "NaN or infinite", "inf.npy": "NaN or infinite", "negative.npy": "run from -1 to -1",
            "huge.npy": "got shape (5000, 2)"}


def test_bad_arrays_are_one_line_image_errors(tmp_path, monkeypatch):
    load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: load(*a, **{**k, "allow_pickle": False}) if k.get(
        "allow_pickle") is False else pytest.fail(f"np.load called without allow_pickle=False: {k}"))
    for name, message in bad_arrays(tmp_path).items():
        with pytest.raises(ImageError) as info:
            read_image(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and message in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_predict_of_nan_is_refused_not_a_guess(trained, tmp_path, mnistlab):
    _, ids, db = trained
    bad_arrays(tmp_path)
    for name in ("nan.npy", "strings.npy", "empty.npy"):
        message = one_line_error(mnistlab("predict", ids["mlp"], tmp_path / name, "--store", db))
        assert name in message and "%" not in message


def test_predict_gives_probabilities_for_a_model_that_outputs_logits(trained, mnist, tmp_path):
    store, ids, _ = trained
    np.save(tmp_path / "digit.npy", mnist[1][0][0])
    rows = predict(store, ids["logits"], [tmp_path / "digit.npy"])
    probabilities = np.array(rows[0]["probabilities"])
    assert abs(probabilities.sum() - 1) < 1e-4 and (probabilities >= 0).all() and rows[0]["confidence"] <= 1


# ---------------------------------------------------------------- images through Pillow

def test_png_modes_pillow_reads(tmp_path):
    from PIL import Image
    grey = np.zeros((28, 28), np.uint8)
    grey[5:20, 12:16] = 200
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    Image.fromarray((grey.astype(np.uint16) * 257)).save(tmp_path / "sixteen.png")  # 16-bit grey
    Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA").save(tmp_path / "grey-alpha.png")
    Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 128)]), "RGBA").save(tmp_path / "rgba.png")
    for name in ("palette.png", "sixteen.png", "grey-alpha.png", "rgba.png"):
        assert np.abs(read_image(tmp_path / name) - grey / 255).max() < 1 / 255 + 1e-6, name


def bomb(width: int, height: int) -> bytes:
    """An all-black 8-bit grey PNG of width x height, compressed row by row (20000^2: 389 KB, 400 MB decoded)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    packer, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0, then the pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(20000, 20000), (5000, 300)])
def test_png_bomb_is_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb(width, height))
    code = textwrap.dedent(f"""\
        import re, sys
        from PIL import Image, PngImagePlugin
        from mnistlab.images import ImageError, read_image
        def peak():  # VmHWM, this process's own peak (ru_maxrss starts at the forking pytest's size)
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
        before = peak()
        try:
            read_image({str(path)!r})
        except ImageError as exc:
            print(exc)
        print((peak() - before) // 1024)  # MB
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    message, grown = done.stdout.strip().splitlines()
    assert message.startswith(f"{path}: the image is") and "4096x4096" in message, done.stderr
    assert int(grown) < 32, f"reading the header grew the process by {grown} MB"


# ---------------------------------------------------------------- ONNX

def torch_probabilities(store, run_id, x):
    import torch
    model, _ = load_model(store, run_id)
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
        return (torch.softmax(out, 1) if model.output_activation == "softmax" else out).numpy()


def onnx_outputs(path, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, {"pixels": x})[0]


@pytest.mark.parametrize("model,layout", [("mlp", (784,)), ("cnn", (1, 28, 28))])
def test_onnx_export_predicts_as_torch_does_on_1000_test_images(trained, mnist, tmp_path, mnistlab, model, layout):
    store, ids, db = trained
    x = (mnist[1][0][:1000].astype(np.float32) / 255).reshape(1000, *layout)
    if model == "mlp":  # through the command line once
        code, out, err = mnistlab("export", ids[model][:8], "-o", tmp_path / "onnx", "--format", "onnx", "--store", db)
        assert code == 0 and not err, err  # the exporter's own logging is kept quiet
        assert out.split() == [str(tmp_path / "onnx" / f) for f in ("model.onnx", "spec.json", "history.csv")]
    else:
        export(store, ids[model], tmp_path / "onnx", format="onnx")
    session, got = onnx_outputs(tmp_path / "onnx" / "model.onnx", x)
    want = torch_probabilities(store, ids[model], x)
    assert got.shape == (1000, 10) and np.array_equal(got.argmax(1), want.argmax(1))
    assert np.abs(got - want).max() < 1e-5 and np.allclose(got.sum(1), 1, atol=1e-5)
    (given,), (output,) = session.get_inputs(), session.get_outputs()
    assert given.name == "pixels" and given.shape[1:] == list(layout) and isinstance(given.shape[0], str)
    assert output.name == "probabilities"
    meta = session.get_modelmeta()
    assert meta.custom_metadata_map["run_id"] == ids[model] and meta.custom_metadata_map["output"] == "probabilities"
    assert ("N, 1, 28, 28" if model == "cnn" else "N, 784") in meta.description and "/ 255" in meta.description


def test_onnx_export_of_a_logits_model_outputs_logits_and_says_so(trained, mnist, tmp_path):
    store, ids, _ = trained
    x = mnist[1][0][:50].astype(np.float32).reshape(50, 784) / 255
    export(store, ids["logits"], tmp_path / "onnx", format="onnx")
    session, got = onnx_outputs(tmp_path / "onnx" / "model.onnx", x)
    assert session.get_outputs()[0].name == "logits" and "apply softmax" in session.get_modelmeta().description
    assert np.abs(got - torch_probabilities(store, ids["logits"], x)).max() < 1e-4
    assert not np.allclose(got.sum(1), 1)


def test_onnx_without_its_packages_says_how_to_install(trained, tmp_path, monkeypatch, mnistlab):
    _, ids, db = trained
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    message = one_line_error(mnistlab("export", ids["mlp"], "-o", tmp_path / "o", "--format", "onnx", "--store", db))
    assert "pip install 'mnistlab[onnx]'" in message and not (tmp_path / "o").exists()
