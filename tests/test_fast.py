"""fast.FastStep (oneDNN GEMMs, no graph) against autograd on MKL as the reference: same loss, grads, masks, stats."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mnistlab.engine import fit as train, onednn
from mnistlab.engine.options import EngineOptions
from mnistlab.spec.calls import parse_call
from mnistlab.data import load_tensors
from mnistlab.engine.fast import FastStep, supports
from mnistlab.engine.layers import build_model
from mnistlab.spec import RunSpec

MODELS = {  # every kind FastStep handles, in and out of place, with penalties on kernels and biases
    "all_kinds": ("Flatten(input_shape=(28, 28, 1))",
                  "Dense(24, activation='relu', kernel_regularizer=l2(0.01))",   # its bias's grad is ~0: BN follows
                  "BatchNormalization(momentum=0.9)", "Dropout(0.3)", "Activation('tanh')",
                  "Dense(20, activation='sigmoid', kernel_regularizer=l1_l2(l1=0.001, l2=0.002),"
                  " bias_regularizer=l1(0.01))",
                  "GaussianNoise(0.2)", "Dense(18, activation='elu', use_bias=False)", "Activation('selu')",
                  "Dropout(0.0)", "Dense(16)", "Dropout(0.5)", "Dense(10, activation='softmax')"),
    "noise_and_bn_first": ("GaussianNoise(0.1)", "Dropout(0.2)", "BatchNormalization()",
                           "Dense(32, activation='selu', kernel_regularizer=l1(0.001))", "BatchNormalization()",
                           "Dense(10, activation='tanh')"),
    "relu_2": ("Dense(64, activation='relu')", "Dense(32, activation='relu')", "Dropout(0.2)",
               "Dense(10, activation='softmax', bias_regularizer=l2(0.01))"),
}


def model(layers, seed=0):
    torch.manual_seed(seed)
    m = build_model([parse_call(s) for s in layers])
    generator = torch.Generator().manual_seed(seed + 1)
    for module in m.modules():
        if hasattr(module, "generator"):
            module.generator = generator   # one per model, as fit() gives each run
    return m


def autograd_step(m, x, y):
    train.configure(m, EngineOptions(dense_gemm="torch"))   # the reference: F.linear, i.e. MKL, under autograd
    try:
        loss = F.cross_entropy(m(x), y) + m.regularization_loss()
        m.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        train.configure(m, EngineOptions())
    return loss.detach()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_equals_autograd(name, training):
    ref = model(MODELS[name])
    fast = copy.deepcopy(ref)   # same weights; a copy of the generator in the same state
    for m in (ref, fast):
        m.train(training)
    step = FastStep(fast, batch_size=32)
    image = len(ref.torch_input_shape) == 3
    for n in (32, 7, 40, 32):   # a short batch takes slices of the buffers, a longer one new ones
        x = torch.rand(n, *((1, 28, 28) if image else (784,)))
        y = torch.randint(0, 10, (n,))
        expected = autograd_step(ref, x, y)
        loss, logits = step(x, y)
        assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
        assert not loss.requires_grad and not logits.requires_grad and logits.shape == (n, 10)
        for (key, p), q in zip(ref.named_parameters(), fast.parameters()):
            # rounding in the sums scales with their largest terms: near-zero entries of a deep layer's
            # grad differ by up to ~5e-5 of the largest entry (all_kinds' dense_1, BLAS at 1 thread vs 2)
            atol = max(1e-6, 1e-4 * p.grad.abs().max().item())
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=atol, msg=lambda m: f"{key}: {m}")
        for (key, b), c in zip(ref.named_buffers(), fast.buffers()):   # BatchNorm's running statistics
            torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{key}: {m}")
        with torch.no_grad():   # the same update on both, so the next step starts from new weights
            for p, q in zip(ref.parameters(), fast.parameters()):
                p -= 0.1 * p.grad
                q -= 0.1 * q.grad


def test_grads_are_written_each_step():
    m = model(MODELS["relu_2"])
    step = FastStep(m, batch_size=16)
    kernels = {id(m.dense_1.weight), id(m.dense_2.weight), id(m.dense_3.weight)}
    bound = {id(p): p.grad for p in m.parameters() if id(p) not in kernels}   # biases: overwritten in place
    x, y = torch.rand(16, 784), torch.randint(0, 10, (16,))
    step(x, y)
    first = {id(p): p.grad.clone() for p in m.parameters()}
    m.zero_grad(set_to_none=True)   # a caller that drops them: the step binds its own again
    m.eval()   # no dropout: the same batch gives other grads than in training
    step(x, y)
    assert all(p.grad is bound[id(p)] for p in m.parameters() if id(p) in bound)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())
    assert all(not torch.equal(p.grad, first[id(p)]) for p in m.parameters() if id(p) in kernels)


def test_supports_only_flat_float32_cpu_mlps():
    assert all(supports(model(layers)) for layers in MODELS.values())
    cnn = ("Conv2D(8, (3, 3), activation='relu', input_shape=(28, 28, 1))", "MaxPooling2D((2, 2))", "Flatten()",
           "Dense(10, activation='softmax')")
    assert not supports(model(cnn))
    assert not supports(model(("Dense(32, activation='softmax')", "Dense(10, activation='softmax')")))
    assert not supports(model(("Dense(32, activation='softplus')", "Dense(10, activation='softmax')")))
    assert not supports(model(MODELS["relu_2"]).double())
    with torch.device("meta"):   # stands in for CUDA: parameters off the CPU
        assert not supports(build_model([parse_call(s) for s in MODELS["relu_2"]]))
    with pytest.raises(ValueError, match="flat-input MLPs"):
        FastStep(model(cnn), 32)


def test_dense_gemm_torch_falls_back_to_f_linear():
    m = model(MODELS["relu_2"]).eval()   # no dropout: the two passes see the same function
    x = torch.rand(8, 784, requires_grad=True)
    on = m(x)
    on.sum().backward()
    grad_on = x.grad.clone()
    assert onednn.available() and on.grad_fn.name().endswith("_LinearBackward")  # this machine's wheel has oneDNN
    train.configure(m, EngineOptions(dense_gemm="torch"))
    assert not supports(m)   # the graph-free step is oneDNN's
    x.grad = None
    off = m(x)
    off.sum().backward()
    assert off.grad_fn.name() == "AddmmBackward0"
    torch.testing.assert_close(off, on, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, grad_on, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def data(mnist):
    return load_tensors("mnist", train_size=2000, test_size=500)


def test_fit_fast_equals_fit_autograd(data, monkeypatch):
    spec = RunSpec(study="t", model="m", dataset="mnist", epochs=2, batch_size=64, optimizer="adam()",
                   layers=("Dense(64, activation='relu')", "Dropout(0.3)", "Dense(32, activation='relu')",
                           "Dense(10, activation='softmax')"),
                   loss="categorical_crossentropy", validation="test", train_size=2000, test_size=500, seed=3)
    assert supports(train.make_model(spec, data))   # 2000 = 31 * 64 + 16: a short last batch too
    calls = []
    step = FastStep.__call__
    monkeypatch.setattr(FastStep, "__call__", lambda self, x, y: calls.append(1) or step(self, x, y))
    fast = train.fit(spec, data, options=EngineOptions(graph_free_mlp_step=True))
    assert len(calls) == 2 * 32
    assert fast.engine["graph_free_mlp_step"] and fast.engine["dense_gemm"] == "onednn"
    plain = train.fit(spec, data, options=EngineOptions(graph_free_mlp_step=False))
    assert not plain.engine["graph_free_mlp_step"]
    assert len(calls) == 2 * 32
    for a, b in zip(plain.history, fast.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    assert fast.test_accuracy == pytest.approx(plain.test_accuracy, abs=0.005)
