"""What a run costs before it trains: multiply-adds from the model's layers, a peak-memory estimate,
and a short timed calibration of a few training steps on random data of the run's shape.

>>> macs_per_image(spec)              # forward multiply-adds of its Dense and Conv2D layers, one image
>>> calibrate([spec])                  # seconds per training step, through the engine that would train it
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn as nn

from ..data import TrainData, dataset
from ..spec import RunSpec
from .fit import EVAL_BYTES, Callbacks, data_shape, fit
from .group import fit_group
from .layers import Sequential, build_model, input_shape
from .optim import build_optimizer

BACKWARD = 2  # a training step's backward pass costs about twice its forward pass (3x forward in all)
# a training process before its data and model: ru_maxrss on the CPU once a tiny MLP and a tiny CNN
# have trained (mnistlab and torch imported, 320 MiB, plus what the first steps load and compile)
PROCESS_BYTES = 420 * 2**20
CALIBRATION_STEPS = 5


def _meta_model(spec: RunSpec) -> Sequential:
    """The run's model with shapes and no storage: counting costs nothing."""
    calls = spec.layer_calls()
    with torch.device("meta"):
        return build_model(calls, input_shape(calls))


def macs_per_image(spec: RunSpec) -> int:
    """Multiply-adds of one image's forward pass through the Dense and Conv2D layers (the rest, pooling,
    normalization and activations, adds a few percent at most)."""
    model = _meta_model(spec)
    return sum(_layer_macs(model, info) for info in model.layers if info.kernel)


def _layer_macs(model: Sequential, info) -> int:
    module = getattr(model, info.kernel)
    if isinstance(module, nn.Conv2d):  # every output pixel of every filter: in-channels x kernel area
        return math.prod(info.output_shape) * module.weight[0].numel()
    return module.weight.numel()  # nn.Linear: in x out


def sizes(spec: RunSpec) -> tuple[int, int]:
    """(training images, test images) the run uses."""
    shapes = dataset(spec.dataset).shapes
    return spec.train_size or shapes["x_train"][0], spec.test_size or shapes["x_test"][0]


def evaluated_images(spec: RunSpec) -> int:
    """Images evaluated over the run: the test set after every epoch (when validating), then both sets."""
    train, test = sizes(spec)
    return (spec.epochs * test if spec.validation == "test" else 0) + train + test


def macs_per_run(spec: RunSpec) -> int:
    """Multiply-adds of a whole run: forward and backward over every epoch, plus its evaluations."""
    train, _ = sizes(spec)
    forward = macs_per_image(spec)
    return forward * ((1 + BACKWARD) * train * spec.epochs + evaluated_images(spec))


def optimizer_slots(spec: RunSpec) -> int:
    """Tensors the optimizer keeps per parameter (Adam 2, SGD 0, with momentum 1, ...): counted on a
    4-element parameter after one step, so every registered optimizer answers for itself."""
    p = torch.zeros(4, requires_grad=True)
    optimizer = build_optimizer(spec.optimizer_call(), [p])
    p.grad = torch.zeros(4)
    optimizer.step()
    return sum(1 for t in optimizer.state[p].values() if torch.is_tensor(t) and t.numel() == 4)


def peak_bytes(specs: Sequence[RunSpec]) -> int:
    """Estimated peak memory of training ``specs`` together (one process): the process itself, the
    whole dataset as uint8 while the used images become float32, per member the weights, gradients,
    optimizer state and a batch's activations, the evaluation outputs, and one checkpoint's copy.
    Within about 10% of the measured ru_maxrss for MLP groups and a CNN (docs/STATISTICS.md)."""
    spec, k = specs[0], len(specs)
    model = _meta_model(spec)
    train, test = sizes(spec)
    shapes = dataset(spec.dataset).shapes
    pixels = math.prod(shapes["x_train"][1:])
    source = (shapes["x_train"][0] + shapes["x_test"][0]) * pixels  # uint8, read whole, then sliced
    params = sum(p.numel() for p in model.parameters())
    state = params * 4 * (2 + optimizer_slots(spec))  # weights, gradients, optimizer tensors
    outputs = sum(math.prod(info.output_shape) for info in model.layers)
    activations = spec.batch_size * 4 * (pixels + 3 * outputs)  # kept for backward, their gradients
    evaluation = 4 * 10 * k * (train + test) + 2 * EVAL_BYTES  # logits of both sets, batches in flight
    checkpoint = params * 4 * (1 + optimizer_slots(spec))
    return PROCESS_BYTES + source + (train + test) * pixels * 4 + k * (state + activations) + evaluation + checkpoint


def calibrate(specs: Sequence[RunSpec], steps: int = CALIBRATION_STEPS) -> float:
    """Seconds per training step of ``specs`` trained together (one spec: the plain engine), timed on
    random data of their shape: two epochs of ``steps`` steps each, the second one timed (the first
    builds, warms caches and pays for first-call costs)."""
    spec = specs[0]
    info = dataset(spec.dataset)
    shape = (1, *info.shapes["x_train"][1:]) if data_shape(spec) else (math.prod(info.shapes["x_train"][1:]),)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    n = spec.batch_size * steps
    x = torch.rand((n, *shape), generator=generator).to(device)
    y = torch.randint(0, info.num_classes, (n,), generator=generator).to(device)
    data = TrainData(x, y, x[:1], y[:1], shape, info.num_classes)
    quick = [replace(s, epochs=2, validation="none") for s in specs]
    ends: list[float] = []
    mark = Callbacks(on_epoch=lambda row, checkpoint: ends.append(time.perf_counter()))
    start = time.perf_counter()
    if len(quick) > 1:
        fit_group(quick, data, [mark] + [Callbacks()] * (len(quick) - 1))
    else:
        fit(quick[0], data, mark)
    if len(ends) >= 2:
        return (ends[1] - ends[0]) / steps
    return (time.perf_counter() - start) / steps  # diverged on random data: an upper bound


def seconds_per_run(specs: Sequence[RunSpec], step_seconds: float) -> float:
    """A member's share of the group's wall time, from the group's seconds per training step; an
    image's evaluation is taken as a third of its share of a step (forward only)."""
    spec = specs[0]
    train, _ = sizes(spec)
    per_image = step_seconds / spec.batch_size / (1 + BACKWARD)
    total = spec.epochs * math.ceil(train / spec.batch_size) * step_seconds + evaluated_images(spec) * per_image
    return total / len(specs)
