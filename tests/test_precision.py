"""bf16 mixed precision on the CPU (and on CUDA where there is one): forward passes autocast to bfloat16;
master weights, optimizer state and the loss stay fp32; the fp32-only fast paths step aside; a bf16 run
trains as well as fp32 on a slice, resumes bit for bit, groups like alone; study, flag and record."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import MLP, tiny_study
from mnistlab.data import load_tensors
from mnistlab.engine import fast, onednn
from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
from mnistlab.engine.fit import Callbacks, data_shape, fit
from mnistlab.engine.group import fit_group
from mnistlab.engine.options import EngineOptions
from mnistlab.errors import OptionsError
from mnistlab.spec import RunSpec

from test_runner import mnistlab, store_of

BF16 = EngineOptions(precision="bf16")
DROP = ("Dense(64, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')")
CNN = ("Conv2D(8, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "BatchNormalization()", "Flatten()",
       "Dense(10, activation='softmax')")


def run_spec(layers, seed=1, epochs=2, train_size=2000, test_size=500, batch_size=64):
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=epochs, batch_size=batch_size,
                   optimizer="adam()", loss="categorical_crossentropy", validation="test",
                   train_size=train_size, test_size=test_size, seed=seed)


def tensors(spec, device="cpu"):
    return load_tensors("mnist", image=data_shape(spec), train_size=spec.train_size, test_size=spec.test_size,
                        device=device)


def test_bf16_options_step_aside_and_autocast():
    used = BF16.resolved()
    assert used.dense_gemm == "torch" and used.graph_free_mlp_step is False  # fp32-only paths
    assert EngineOptions().resolved().dense_gemm == ("onednn" if onednn.available() else "torch")
    with BF16.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        x, w = torch.randn(4, 784), torch.randn(16, 784)
        assert onednn.linear(x, w).dtype == torch.bfloat16  # the oneDNN fp32 Linear steps aside
    with EngineOptions().autocast():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(OptionsError, match="precision='fp16' is unknown; use one of fp32, bf16"):
        EngineOptions(precision="fp16")


def test_fast_step_steps_aside_under_autocast(mnist):
    from mnistlab.engine.fit import make_model
    spec = run_spec(MLP)
    model = make_model(spec, tensors(spec))
    assert fast.supports(model) == onednn.available()
    with BF16.autocast():
        assert not fast.supports(model)


def test_bf16_forward_in_bf16_master_weights_optimizer_state_and_loss_in_fp32(mnist, monkeypatch):
    from mnistlab.engine import fit as engine
    spec = run_spec(DROP)
    data = tensors(spec)
    seen, saved, build = set(), [], engine.make_model

    def watched(*args, **kwargs):  # the run's model, every Dense layer reporting its output dtype
        model = build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        return model
    monkeypatch.setattr(engine, "make_model", watched)
    half = fit(spec, data, Callbacks(on_epoch=lambda row, ck: saved.append(ck)), options=BF16)
    monkeypatch.setattr(engine, "make_model", build)
    full = fit(spec, data)
    assert seen == {torch.bfloat16}  # every Dense layer ran in bf16, in training and evaluation
    assert all(v.dtype == torch.float32 for v in half.weights.values())  # master weights
    state = saved[-1].optimizer["state"]
    assert all(t.dtype == torch.float32 for s in state.values() for t in s.values() if t.is_floating_point())
    assert half.engine["precision"] == "bf16" and half.engine["dense_gemm"] == "torch"
    assert half.engine["bf16_native"] == torch.ops.mkldnn._is_mkldnn_bf16_supported()  # emulated bf16 is slow
    assert "bf16_native" not in full.engine
    assert half.history[0]["loss"] != full.history[0]["loss"]  # bf16 numbers are not fp32's...
    assert half.test_accuracy == pytest.approx(full.test_accuracy, abs=0.03)  # ...but train as well
    assert half.test_accuracy > 0.75  # fp32: 0.82 on this slice


def test_bf16_cnn_trains_and_resumes_bit_for_bit(mnist):
    spec = run_spec(CNN, epochs=2, train_size=1500, test_size=300, batch_size=50)
    data = tensors(spec)
    saved = []
    full = fit(spec, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))), options=BF16)
    resumed = fit(spec, data, resume=checkpoint_from_arrays(*saved[0]), options=BF16)  # as if killed after epoch 1
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.test_loss == full.test_loss and resumed.confusion_test == full.confusion_test
    assert full.engine["channels_last"] and full.test_accuracy > 0.6  # fp32: 0.67 on this slice (BN's running stats)
    from mnistlab.engine.fit import make_model
    model, dtypes = make_model(spec, data, BF16), []
    next(m for m in model.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
        lambda module, inputs, output: dtypes.append(output.dtype))
    with BF16.autocast():
        model(data.x_test[:4])
    assert dtypes == [torch.bfloat16]  # the convolution ran in bf16


def test_bf16_group_members_train_as_if_alone(mnist):
    specs = [run_spec(DROP, seed=i) for i in range(3)]
    data = tensors(specs[0])
    together = fit_group(specs, data, options=BF16)
    for spec, member in zip(specs, together):
        alone = fit(spec, data, options=BF16)
        assert member.test_accuracy == pytest.approx(alone.test_accuracy, abs=0.02)
        assert member.history[-1]["loss"] == pytest.approx(alone.history[-1]["loss"], rel=0.05)
        assert member.engine["precision"] == "bf16"


def test_study_flag_and_record(write_study, mnist, tmp_path):
    path = write_study(tiny_study(epochs=1).replace("[train]\n", '[train]\nprecision = "bf16"\ndevice = "cpu"\n'))
    mnistlab("run", path, "-q")
    env = store_of(path).runs(study="tiny")[0]["environment"]
    assert env["precision"] == "bf16" and env["device"] == "cpu"
    mnistlab("run", path, "-q", "--precision", "fp32", "--store", tmp_path / "fp32.db")  # the flag wins
    from mnistlab.store import Store
    assert Store(str(tmp_path / "fp32.db")).runs(study="tiny")[0]["environment"]["precision"] == "fp32"
    bad = mnistlab("run", path, "--precision", "fp8", check=False)
    assert bad.returncode == 2 and "precision='fp8' is unknown" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the error is for machines without")
def test_cuda_asked_for_without_a_gpu_is_a_one_line_error(write_study):
    path = write_study(tiny_study(epochs=1).replace("[train]\n", '[train]\ndevice = "cuda"\n'))
    done = mnistlab("run", path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "device 'cuda' was asked for, but torch" in done.stderr and "sees no CUDA GPU" in done.stderr
    assert EngineOptions(device="auto").resolved().device == "cpu"
