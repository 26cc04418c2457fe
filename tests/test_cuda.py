"""The engine on a CUDA GPU: the dataset lives on the GPU, models, generators and optimizer state too,
groups run as batched kernels, the CPU-only paths step aside, results record the device and its
name, a run resumes bit for bit, bf16 autocasts. Skipped (with the reason) where torch sees no GPU;
benchmarks/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from conftest import MLP, tiny_study
from mnistlab.data import load_tensors
from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
from mnistlab.engine.fit import Callbacks, data_shape, fit
from mnistlab.engine.group import fit_group
from mnistlab.engine.options import EngineOptions
from mnistlab.runner.driver import data_for
from mnistlab.spec import RunSpec

from test_runner import mnistlab, store_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason=f"no CUDA GPU (torch {torch.__version__}): run benchmarks/gpu_check.sh on one")
CUDA = EngineOptions(device="cuda")
DROP = ("GaussianNoise(0.1)", "Dense(64, activation='relu')", "Dropout(0.3)", "Dense(10, activation='softmax')")
CNN = ("Conv2D(8, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "BatchNormalization()", "Flatten()",
       "Dense(10, activation='softmax')")


def run_spec(layers, seed=1, epochs=2, train_size=2000, test_size=500, batch_size=64, optimizer="adam()"):
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=epochs, batch_size=batch_size,
                   optimizer=optimizer, loss="categorical_crossentropy", validation="test",
                   train_size=train_size, test_size=test_size, seed=seed)


def tensors(spec, device):
    return load_tensors("mnist", image=data_shape(spec), train_size=spec.train_size, test_size=spec.test_size,
                        device=device)


def test_auto_picks_the_gpu_and_the_cpu_paths_step_aside():
    used = EngineOptions(device="auto").resolved()
    assert used.device == "cuda" and used.dense_gemm == "torch"
    assert not used.graph_free_mlp_step and not used.channels_last
    record = CUDA.record()
    assert record["device"] == "cuda" and record["device_name"] == torch.cuda.get_device_name(0)


def test_the_dataset_lives_on_the_gpu(mnist):
    data = data_for(run_spec(MLP), CUDA)
    assert data.x_train.is_cuda and data.y_test.is_cuda and data.x_train.dtype == torch.float32


def test_a_run_trains_on_the_gpu_like_on_the_cpu(mnist):
    spec = run_spec(DROP)
    gpu = fit(spec, tensors(spec, "cuda"), options=CUDA)
    cpu = fit(spec, tensors(spec, "cpu"))
    assert gpu.engine["device"] == "cuda" and gpu.engine["device_name"] == torch.cuda.get_device_name(0)
    assert all(not w.is_cuda for w in gpu.weights.values())  # results come back to the CPU for the store
    assert gpu.test_accuracy == pytest.approx(cpu.test_accuracy, abs=0.02)  # other kernels, other dropout draws


def test_resume_on_the_gpu_is_bit_for_bit(mnist):
    spec = run_spec(DROP, epochs=3)
    data = tensors(spec, "cuda")
    saved = []
    full = fit(spec, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))), options=CUDA)
    resumed = fit(spec, data, resume=checkpoint_from_arrays(*saved[0]), options=CUDA)  # the CUDA generator's state too
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.test_loss == full.test_loss and resumed.confusion_test == full.confusion_test


def test_a_group_runs_as_batched_kernels_with_the_numbers_of_its_members_alone(mnist):
    specs = [run_spec(DROP, seed=i, optimizer=f"adam(learning_rate={lr})") for i, lr in enumerate([1e-3, 3e-3])]
    data = tensors(specs[0], "cuda")
    together = fit_group(specs, data, options=CUDA)
    for spec, member in zip(specs, together):
        alone = fit_group([spec], data, options=CUDA)[0]
        assert member.test_loss == pytest.approx(alone.test_loss, rel=1e-4)
        assert member.engine["device"] == "cuda"


def test_bf16_on_the_gpu(mnist):
    spec = run_spec(CNN, train_size=3000, batch_size=50)
    data = tensors(spec, "cuda")
    half = fit(spec, data, options=EngineOptions(device="cuda", precision="bf16"))
    full = fit(spec, data, options=CUDA)
    assert half.engine["precision"] == "bf16" and all(w.dtype == torch.float32 for w in half.weights.values())
    assert half.test_accuracy == pytest.approx(full.test_accuracy, abs=0.05)


def test_cli_device_cuda_records_the_gpu(write_study, mnist):
    path = write_study(tiny_study(models={"a": MLP, "b": ["Dense(10, activation='softmax')"]}, epochs=1,
                                  extra="repeats = 2"))
    mnistlab("run", path, "-q", "--device", "cuda")
    runs = store_of(path).runs(study="tiny")
    assert {r["environment"]["device"] for r in runs} == {"cuda"} and all(r["status"] == "done" for r in runs)
    assert {r["environment"]["device_name"] for r in runs} == {torch.cuda.get_device_name(0)}
