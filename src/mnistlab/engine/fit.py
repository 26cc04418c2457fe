"""Fit one run: ``fit(spec, data) -> RunResult``.

The whole dataset lives in memory as tensors; each epoch shuffles with a generator seeded from
the run's seed, so the same seed gives the same numbers on CPU. History rows read like Keras'
``history.history``: ``loss``/``accuracy`` are sample-weighted running means over the epoch's
batches (the model changes as they accumulate), ``val_loss``/``val_accuracy`` a full evaluation
after the epoch; both losses include the regularization penalty, as in Keras.

The engine computes; it does not print or write SQL. Progress and checkpoints go through
:class:`Callbacks`; :class:`Checkpoint` is what a resumed run needs to continue bit-for-bit.

>>> result = fit(spec, load_tensors("mnist"))
>>> result.history[-1]["val_accuracy"]
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import fast
from .augment import adapt
from .callbacks import Training, build_callbacks
from .checkpoint import Checkpoint, capture
from .losses import check_output, parse_loss
from .onednn import Linear
from .options import EngineOptions
from ..data import TrainData
from .layers import Sequential, build_model, input_kind
from .optim import build_optimizer, learning_rate
from .schedules import LearningRate
from ..spec import RunSpec

EVAL_BATCH = 1024  # evaluation batch at most: no gradients; larger ones only add memory
EVAL_BYTES = EngineOptions.eval_bytes  # default budget for the widest layer's output (docs/PERFORMANCE.md, W3)
PROGRESS_EVERY = 0.25  # seconds between progress callbacks (each one syncs with the device)


@dataclass
class Callbacks:
    """Hooks the CLI and the store attach; all optional."""

    on_batch: Callable[[int, int, float, float], None] | None = None  # (batch, n_batches, loss, acc)
    on_epoch: Callable[[dict[str, float], Checkpoint], None] | None = None
    on_start: Callable[[int, int], None] | None = None  # (first epoch, epochs)


@dataclass
class RunResult:
    spec: RunSpec
    status: str  # "done" | "diverged"
    history: list[dict[str, float]]
    params: tuple[int, int, int]  # total, trainable, non-trainable (Keras' counting)
    seconds: float
    train_loss: float = math.nan
    train_accuracy: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    confusion_train: list[list[int]] = field(default_factory=list)  # [true][predicted]
    confusion_test: list[list[int]] = field(default_factory=list)
    mistakes: list[dict[str, float]] = field(default_factory=list)  # test images it gets wrong
    # split -> predicted class per image, uint8, and "<split>_labels" -> the true classes: paired
    # comparisons (McNemar) on the shared test set from the store, with no retraining and no dataset
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # final state_dict, by layer name
    error: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)  # the EngineOptions used, resolved (options.record())
    stopped: dict[str, Any] | None = None  # callbacks.Training.record(): early stop and restored epoch, if any

    @property
    def metrics(self) -> dict[str, float]:
        return {"train_loss": self.train_loss, "train_accuracy": self.train_accuracy,
                "test_loss": self.test_loss, "test_accuracy": self.test_accuracy}


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def make_model(spec: RunSpec, data: TrainData, options: EngineOptions | None = None) -> Sequential:
    """The run's model, initialized from its seed, its loss checked against its last layer, and any
    ``Normalization()`` adapted to the images it trains on (``data.x_train``)."""
    torch.manual_seed(spec.seed)  # initializers draw from the global generator
    calls = spec.layer_calls()
    model = build_model(calls, tuple(data.x_train.shape[1:])).to(data.x_train.device)
    adapt(model, data.x_train)
    check_output(parse_loss(spec.loss), model.output_activation, len(calls) - 1, spec.loss)
    return configure(model, options or EngineOptions())


def configure(model: Sequential, options: EngineOptions) -> Sequential:
    """Apply the (resolved) options that live in the model: the Dense GEMM backend."""
    onednn = options.resolved().dense_gemm == "onednn"
    for module in model.modules():
        if isinstance(module, Linear):
            module.use_onednn = onednn
    return model


def fit(spec: RunSpec, data: TrainData, callbacks: Callbacks | None = None,
        resume: Checkpoint | None = None, options: EngineOptions | None = None) -> RunResult:
    """Train ``spec`` on ``data`` (shaped for the model: see :func:`data_shape`) as ``options`` say.
    With ``spec.validation`` a fraction, the last part of ``data``'s training images validates
    (unless ``data`` was split already); the test set is scored once, at the end."""
    callbacks = callbacks or Callbacks()
    options = (options or EngineOptions()).on(data.x_train.device)  # the engine computes where the data is
    data = with_validation(spec, data)
    model = make_model(spec, data, options)
    if options.channels_last and data.x_train.dim() == 4:
        model = model.to(memory_format=torch.channels_last)  # before the optimizer sees the parameters
    optimizer = build_optimizer(spec.optimizer_call(), model.parameters())
    shuffle, noise = generators(spec, data.x_train.device)
    for module in model.modules():  # dropout and noise draw from the run's own generator
        if hasattr(module, "generator"):
            module.generator = noise
    training = Training(build_callbacks(spec.callbacks), learning_rate(spec.optimizer_call()),
                        lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
    batches = math.ceil(len(data.x_train) / spec.batch_size)
    history: list[dict[str, float]] = []
    seconds, step = 0.0, 0
    if resume is not None:
        model.load_state_dict(resume.model)
        # the state only (step, moments, momentum buffers by parameter index): both engines write it
        optimizer.load_state_dict({"state": copy.deepcopy(resume.optimizer["state"]),
                                   "param_groups": optimizer.state_dict()["param_groups"]})
        noise.set_state(resume.torch_rng)
        shuffle.set_state(resume.shuffle_rng)
        history, seconds = list(resume.history), resume.seconds
        step = resume.step if resume.step is not None else resume.epoch * batches
        training.load(resume.training, resume.kept)
    if callbacks.on_start:
        callbacks.on_start(len(history), spec.epochs)
    status, error = "done", None
    for epoch in range(len(history), spec.epochs):
        if training.stop_training:  # resumed after the epoch a callback stopped at
            break
        start, lr = time.perf_counter(), training.lr.at(step)
        try:
            loss, accuracy = _train_epoch(model, optimizer, data, spec.batch_size, shuffle, callbacks,
                                          options, training.lr, step)
        except Diverged as exc:
            status, error = "diverged", str(exc).format(epoch=epoch + 1)
            break
        step += batches
        row = {"epoch": epoch + 1, "loss": loss, "accuracy": accuracy}
        val = validation_set(spec, data)
        if val is not None:
            row["val_loss"], row["val_accuracy"], _ = evaluate(model, *val, options.eval_bytes, options)
        row["lr"] = lr  # the learning rate of the epoch's first step
        row["seconds"] = time.perf_counter() - start
        seconds += row["seconds"]
        history.append(row)
        training.epoch_end(epoch, row)
        if callbacks.on_epoch:
            callbacks.on_epoch(row, capture(epoch + 1, model, optimizer, shuffle, noise, history, seconds,
                                            step, training))
    kept = training.train_end() if status == "done" else None
    if kept is not None:  # restore_best_weights: the final metrics are the kept weights'
        model.load_state_dict(kept)
    result = _finish(spec, model, data, history, seconds, status, error, options)
    result.engine, result.stopped = options.record(), training.record()
    return result


def with_validation(spec: RunSpec, data: TrainData) -> TrainData:
    """``data`` with the run's validation split held out (``validation = 0.1``), if not already."""
    if isinstance(spec.validation, float) and data.x_val is None:
        return data.split(spec.validation)
    return data


def validation_set(spec: RunSpec, data: TrainData) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The images ``val_loss``/``val_accuracy`` are measured on: the test set, the split, or none."""
    if spec.validation == "test":
        return data.x_test, data.y_test
    return None if spec.validation == "none" else (data.x_val, data.y_val)


def _train_epoch(model: Sequential, optimizer: torch.optim.Optimizer, data: TrainData, batch_size: int,
                 shuffle: torch.Generator, callbacks: Callbacks, options: EngineOptions, lr: LearningRate,
                 first_step: int) -> tuple[float, float]:
    """One epoch; ``options`` resolved (``options.on(device)``): the graph-free step, the precision."""
    model.train()
    x, y = data.x_train, data.y_train
    n = x.shape[0]
    order = torch.randperm(n, generator=shuffle).to(x.device)
    n_batches = math.ceil(n / batch_size)
    penalized = any(info.penalties for info in model.layers)  # skip a zero tensor per step otherwise
    step = fast.FastStep(model, batch_size) if options.graph_free_mlp_step and fast.supports(model) else None
    loss_sum = torch.zeros((), device=x.device)  # sample-weighted, on the device: no sync per batch
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    last_report = time.perf_counter()
    for b in range(n_batches):
        index = order[b * batch_size:(b + 1) * batch_size]
        xb, yb = x[index], y[index]
        if step is not None:  # writes every p.grad
            loss, logits = step(xb, yb)
        else:
            with options.autocast():  # bf16: the forward pass; the loss below in fp32 on fp32 logits
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            if penalized:
                loss = loss + model.regularization_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        for group in optimizer.param_groups:  # Keras: the schedule at the optimizer's step count
            group["lr"] = lr.at(first_step + b)
        optimizer.step()
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(1) == yb).sum()
        if callbacks.on_batch and time.perf_counter() - last_report > PROGRESS_EVERY:
            seen = min((b + 1) * batch_size, n)
            running = loss_sum.item() / seen
            if not math.isfinite(running):
                raise Diverged(f"training loss became {running} in epoch {{epoch}}, batch {b + 1}")
            callbacks.on_batch(b + 1, n_batches, running, correct.item() / seen)
            last_report = time.perf_counter()
    loss_mean = loss_sum.item() / n
    if not math.isfinite(loss_mean):
        raise Diverged(f"training loss became {loss_mean} in epoch {{epoch}}")
    if callbacks.on_batch:
        callbacks.on_batch(n_batches, n_batches, loss_mean, correct.item() / n)
    return loss_mean, correct.item() / n


def eval_batch(widest: int, members: int = 1, budget: int = EVAL_BYTES) -> int:
    """Images per evaluation batch when a layer outputs ``widest`` floats an image (``members`` models
    at once): as many as fit ``budget`` bytes (EngineOptions.eval_bytes), up to ``EVAL_BATCH``. An MLP evaluates 1,024 images at
    a time; a CNN whose conv outputs 25,088 floats an image 167, which is also faster (the
    activations stay in cache) and keeps its peak memory that of training."""
    return max(1, min(EVAL_BATCH, budget // (4 * max(1, widest) * max(1, members))))


def widest_layer(model: Sequential) -> int:
    """The most floats any layer (or the input) holds for one image."""
    return max([math.prod(model.torch_input_shape)] + [math.prod(i.output_shape) for i in model.layers])


def fill_batches(n: int, size: int, compute: Callable[[int, int], torch.Tensor], axis: int = 0) -> torch.Tensor:
    """``compute(i, j)`` for rows ``i:j`` of ``n`` (n >= 1), ``size`` at a time, written along ``axis``
    into one tensor allocated after the first batch. Not a list joined at the end: small chunks kept
    alive between the batches' large, short-lived activations fragment glibc's heap, and a CNN's
    process grew by 1-6 GB over one pass of 60,000 images (W3 in docs/PERFORMANCE.md)."""
    out = None
    for i in range(0, n, size):
        part = compute(i, min(i + size, n))
        if out is None:
            out = part.new_empty((*part.shape[:axis], n, *part.shape[axis + 1:]))
        out.narrow(axis, i, part.shape[axis]).copy_(part)
    return out


@torch.inference_mode()
def predict(model: Sequential, x: torch.Tensor, budget: int = EVAL_BYTES,
            options: EngineOptions | None = None) -> torch.Tensor:
    """Logits (fp32) for ``x`` in evaluation mode, in batches as large as memory allows (:func:`eval_batch`),
    in the precision ``options`` train in."""
    model.eval()
    autocast = (options or EngineOptions()).on(x.device).autocast
    if x.shape[0] == 0:
        return model(x)

    def logits(i: int, j: int) -> torch.Tensor:
        with autocast():
            return model(x[i:j]).float()
    return fill_batches(x.shape[0], eval_batch(widest_layer(model), budget=budget), logits)


def evaluate(model: Sequential, x: torch.Tensor, y: torch.Tensor, budget: int = EVAL_BYTES,
             options: EngineOptions | None = None) -> tuple[float, float, torch.Tensor]:
    """(loss including regularization, accuracy, logits) over all of ``x``."""
    logits = predict(model, x, budget, options)
    with torch.no_grad():
        loss = F.cross_entropy(logits, y).item() + float(model.regularization_loss())
    accuracy = (logits.argmax(1) == y).float().mean().item()
    return loss, accuracy, logits


def confusion(y: torch.Tensor, predicted: torch.Tensor, classes: int = 10) -> list[list[int]]:
    """Counts, ``[true][predicted]``."""
    counts = torch.bincount(y * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


def prediction_arrays(test_logits: torch.Tensor, y_test: torch.Tensor) -> dict[str, np.ndarray]:
    """``{"test": predicted class per image, "test_labels": true class}``, uint8 (10 classes), on the CPU."""
    as_uint8 = lambda t: t.to(torch.uint8).cpu().numpy()  # noqa: E731
    return {"test": as_uint8(test_logits.argmax(1)), "test_labels": as_uint8(y_test)}


def _mistakes(logits: torch.Tensor, y: torch.Tensor, limit: int = 100) -> list[dict[str, float]]:
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    wrong = (predicted != y).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:limit]  # most confident mistakes first
    return [{"index": int(i), "true": int(y[i]), "predicted": int(predicted[i]),
             "confidence": round(float(confidence[i]), 4)} for i in wrong]


def _finish(spec: RunSpec, model: Sequential, data: TrainData, history: list[dict[str, float]],
            seconds: float, status: str, error: str | None, options: EngineOptions) -> RunResult:
    result = RunResult(spec=spec, status=status, history=history, params=model.count_params(),
                       seconds=seconds, error=error)
    if status != "done":
        return result
    budget = options.eval_bytes
    result.train_loss, result.train_accuracy, train_logits = evaluate(model, data.x_train, data.y_train, budget, options)
    result.test_loss, result.test_accuracy, test_logits = evaluate(model, data.x_test, data.y_test, budget, options)
    result.confusion_train = confusion(data.y_train, train_logits.argmax(1))
    result.confusion_test = confusion(data.y_test, test_logits.argmax(1))
    result.mistakes = _mistakes(test_logits, data.y_test)
    result.predictions = prediction_arrays(test_logits, data.y_test)
    result.weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return result


def generators(spec: RunSpec, device: torch.device | str) -> tuple[torch.Generator, torch.Generator]:
    """(shuffling, dropout and noise) generators of a run: the same in either engine. Shuffling draws
    on the CPU whatever the device (the same order everywhere); dropout and noise on the device (a
    CUDA generator's state is not a CPU one's: a run resumes on the kind of device it started on)."""
    return (torch.Generator(device="cpu").manual_seed(spec.seed + 1),
            torch.Generator(device=device).manual_seed(spec.seed + 2))


def data_shape(spec: RunSpec) -> bool:
    """True when the model takes images (N, 1, 28, 28); False for flat (N, 784) input."""
    return input_kind(spec.layer_calls()) == "image"
