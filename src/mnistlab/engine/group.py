"""Grouped training: K runs of one MLP shape train as one vectorised model.

Runs that share a layer structure, optimizer kind, batch size, epochs and data, and differ in
seed or scalar hyperparameters (learning rate, L2 factor, noise or dropout rate, initializer
scale), are stacked: each Dense layer becomes one batched matmul over (K, batch, features) (K oneDNN
GEMMs where they are large enough to pay: :func:`mnistlab.engine.onednn.stacked_linear`). Each
member keeps its own shuffling, dropout and noise generators and its own optimizer state, so a
run's numbers are the same whether it trains alone (K = 1) or in a group, up to float rounding.

>>> key = group_key(spec)                      # None: not groupable (convolutions, rmsprop, …)
>>> results = fit_group(specs, data)           # one RunResult per spec, like train.fit
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import TrainData
from ..errors import CallSyntaxError, LayerError
from .augment import PREPROCESSING
from .layers import Dropout, Flatten, GaussianNoise, Sequential, build_model, input_shape
from .optim import learning_rate, optimizer_defaults
from .options import EngineOptions
from ..spec import RunSpec
from ..spec.calls import parse_call
from . import onednn
from .checkpoint import Checkpoint
from .fit import (PROGRESS_EVERY, Callbacks, RunResult, _mistakes, confusion, eval_batch, fill_batches,
                  generators, make_model, prediction_arrays, validation_set, widest_layer, with_validation)

ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.Identity, nn.Softmax)
OPTIMIZERS = ("sgd", "adam")
MAX_GROUP = 32  # members per group: bounds memory, keeps each member's slice of the work large


def group_key(spec: RunSpec) -> tuple | None:
    """What runs must share to train together; ``None`` when the engine cannot group this run. Each
    member follows its own learning-rate schedule; runs with callbacks (which stop or change a run
    on its own) train alone."""
    if spec.callbacks:
        return None
    options = optimizer_defaults(spec.optimizer_call())
    if options["name"] not in OPTIMIZERS or options.get("amsgrad"):
        return None
    layout = _layout(spec.layers)
    if layout is None:
        return None
    hyper = tuple(sorted((k, v) for k, v in options.items() if k not in ("learning_rate", "name")))
    return (layout[0], options["name"], hyper, spec.dataset, spec.epochs, spec.batch_size,
            spec.train_size, spec.test_size, spec.validation, spec.loss, layout[1])


@lru_cache(maxsize=4096)  # by layer texts: a sweep of 10,000 runs has a few architectures (plan, estimate)
def _layout(layers: tuple[str, ...]) -> tuple[tuple, str] | None:
    """(the stacked layers' kinds and shapes, the output activation); None when they cannot stack."""
    try:
        with torch.device("meta"):
            calls = tuple(parse_call(text) for text in layers)
            model = build_model(calls, input_shape(calls))
    except (LayerError, CallSyntaxError):  # a bad study is check_study's to report; a bug is raised
        return None
    layout = []
    for name, module in model.named_children():
        if isinstance(module, PREPROCESSING):  # augmentation draws per image; not stacked (yet): trains alone
            return None
        if isinstance(module, nn.Linear):
            layout.append(("linear", tuple(module.weight.shape), module.bias is not None))
        elif isinstance(module, nn.BatchNorm1d):
            layout.append(("bn", module.num_features, module.eps, module.momentum))
        elif isinstance(module, (Dropout, GaussianNoise, Flatten)):
            layout.append((type(module).__name__,))
        elif isinstance(module, ELEMENTWISE):
            layout.append((type(module).__name__, repr(module)))
        else:
            return None
    return tuple(layout), model.output_activation


def _meta_model(spec: RunSpec) -> Sequential:
    calls = spec.layer_calls()
    with torch.device("meta"):
        return build_model(calls, input_shape(calls))


@dataclass
class _Layer:
    """One position of the stacked model: its kind, its stacked tensors, per-member scalars."""

    name: str
    kind: str  # linear | bn | dropout | noise | flatten | act
    params: dict[str, torch.Tensor]  # stacked (K, …), requires grad
    buffers: dict[str, torch.Tensor]  # stacked (K, …)
    scalar: torch.Tensor | None = None  # (K, 1, 1): dropout rate or noise stddev
    module: nn.Module | None = None  # the activation (parameter-free, elementwise)
    penalties: tuple = ()  # ((attr, l1 (K,), l2 (K,)), …)


class Group:
    """K models of one shape as stacked tensors, with their optimizer state and generators."""

    def __init__(self, specs: Sequence[RunSpec], data: TrainData, engine: EngineOptions):
        self.specs, self.engine = list(specs), engine.on(data.x_train.device)
        models = [make_model(s, data, self.engine) for s in specs]  # each initialised from its own seed
        self.output_activation = models[0].output_activation
        self.input_shape = models[0].torch_input_shape
        self.widest = widest_layer(models[0])
        self.device = data.x_train.device
        self.layers = [self._stack(name, [dict(m.named_children())[name] for m in models], models)
                       for name, _ in models[0].named_children()]
        device = data.x_train.device
        self.shuffle, self.noise = map(list, zip(*(generators(s, device) for s in specs)))
        options = [optimizer_defaults(s.optimizer_call()) for s in specs]
        self.kind = options[0]["name"]
        self.options = options[0]
        self.rates = [learning_rate(s.optimizer_call()) for s in specs]  # a schedule or a constant each
        self.lr = torch.tensor([r.at(0) for r in self.rates], device=device)
        self.state: dict[int, dict[str, torch.Tensor]] = {}  # by parameter index, as torch.optim keeps it
        self.step = 0  # optimizer steps taken (Keras' iterations): the schedules' position

    def _stack(self, name: str, modules: list[nn.Module], models: list[Sequential]) -> _Layer:
        first = modules[0]
        penalties = tuple((attr, _factors([getattr(_penalty(m, name, attr), "l1", 0.0) for m in models]),
                           _factors([getattr(_penalty(m, name, attr), "l2", 0.0) for m in models]))
                          for attr in ("weight", "bias") if any(_penalty(m, name, attr) for m in models))
        stack = lambda attr: torch.stack([getattr(m, attr).detach() for m in modules])  # noqa: E731
        if isinstance(first, nn.Linear):
            params = {"weight": stack("weight")} | ({"bias": stack("bias")} if first.bias is not None else {})
            return _Layer(name, "linear", _leaf(params), {}, penalties=penalties)
        if isinstance(first, nn.BatchNorm1d):
            return _Layer(name, "bn", _leaf({"weight": stack("weight"), "bias": stack("bias")}),
                          {"running_mean": stack("running_mean"), "running_var": stack("running_var"),
                           "num_batches_tracked": stack("num_batches_tracked")}, module=first)
        if isinstance(first, Dropout):
            return _Layer(name, "dropout", {}, {}, scalar=_scalars([m.p for m in modules]).to(self.device))
        if isinstance(first, GaussianNoise):
            return _Layer(name, "noise", {}, {}, scalar=_scalars([m.stddev for m in modules]).to(self.device))
        if isinstance(first, Flatten):
            return _Layer(name, "flatten", {}, {})
        return _Layer(name, "act", {}, {}, module=first)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights, named as the plain model's ``state_dict`` (dense_1.weight, …)."""
        return {f"{layer.name}.{attr}": t[k].detach().clone() for layer in self.layers
                for attr, t in (layer.params | layer.buffers).items()}

    def checkpoint(self, k: int, epoch: int, history: list, seconds: float) -> Checkpoint:
        """Member ``k``'s checkpoint in the plain engine's format: either engine can resume it."""
        step = self.kind == "adam"  # torch keeps one step tensor per parameter (and bumps it in place)
        state = {i: {name: t[k].clone() for name, t in st.items()}
                 | ({"step": torch.tensor(float(self.step))} if step else {}) for i, st in self.state.items()}
        return Checkpoint(epoch=epoch, model=self.member_state(k), optimizer={"state": state, "param_groups": []},
                          torch_rng=self.noise[k].get_state(), shuffle_rng=self.shuffle[k].get_state(),
                          history=list(history), seconds=seconds, step=self.step)

    def restore(self, checkpoints: Sequence[Checkpoint], batches: int) -> None:
        """Continue every member from its checkpoint (all at the same epoch, ``batches`` steps an epoch)."""
        with torch.no_grad():
            for layer in self.layers:
                for attr, t in (layer.params | layer.buffers).items():
                    t.copy_(torch.stack([ck.model[f"{layer.name}.{attr}"] for ck in checkpoints]))
        states = [ck.optimizer["state"] for ck in checkpoints]
        self.state = {int(i): {n: torch.stack([s[i][n] for s in states]).to(self.device)
                               for n in states[0][i] if n != "step"} for i in states[0]}
        adam = int(states[0][0]["step"]) if 0 in states[0] and "step" in states[0][0] else None  # Adam's count
        first = checkpoints[0]
        self.step = first.step if first.step is not None else adam if adam is not None else first.epoch * batches
        for k, ck in enumerate(checkpoints):
            self.noise[k].set_state(ck.torch_rng)
            self.shuffle[k].set_state(ck.shuffle_rng)

    def keep(self, members: list[int]) -> None:
        """Drop every member not in ``members`` (diverged ones), keeping the others' state."""
        index = torch.tensor(members, dtype=torch.long, device=self.lr.device)
        with torch.no_grad():
            for layer in self.layers:
                layer.params = _leaf({k: v[index] for k, v in layer.params.items()})
                layer.buffers = {k: v[index].clone() for k, v in layer.buffers.items()}
                layer.scalar = None if layer.scalar is None else layer.scalar[index]
                layer.penalties = tuple((a, l1[index.cpu()], l2[index.cpu()]) for a, l1, l2 in layer.penalties)
        self.state = {i: {n: t[index].clone() for n, t in st.items()} for i, st in self.state.items()}
        self.lr = self.lr[index]
        self.rates = [self.rates[k] for k in members]
        self.specs = [self.specs[k] for k in members]
        self.noise = [self.noise[k] for k in members]
        self.shuffle = [self.shuffle[k] for k in members]

    def parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.layers for p in layer.params.values()]

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """x (K, B, …) -> outputs (K, B, 10): logits when the last activation is softmax."""
        k, b = x.shape[:2]
        for layer in self.layers:
            if layer.kind == "linear":
                w, bias = layer.params["weight"], layer.params.get("bias")
                x = onednn.stacked_linear(x, w, bias, self.engine.dense_gemm == "onednn")
            elif layer.kind == "bn":
                x = self._batchnorm(layer, x, train)
            elif layer.kind == "dropout" and train:
                keep = 1 - layer.scalar
                masks = torch.stack([torch.rand(x.shape[1:], generator=g, device=x.device) for g in self.noise])
                x = x * (masks < keep) / keep
            elif layer.kind == "noise" and train:
                noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device) for g in self.noise])
                x = x + noise * layer.scalar
            elif layer.kind == "flatten":
                x = x.reshape(k, b, -1)
            elif layer.kind == "act":
                x = layer.module(x)
        return x

    def _batchnorm(self, layer: _Layer, x: torch.Tensor, train: bool) -> torch.Tensor:
        gamma, beta, eps = layer.params["weight"], layer.params["bias"], layer.module.eps
        x = x.float()  # statistics in fp32 under bf16 autocast, as torch's batch norm keeps them
        if train:  # batch statistics per member; running averages as torch's BatchNorm1d keeps them
            var, mean = torch.var_mean(x, dim=1, unbiased=False)
            with torch.no_grad():
                n, momentum = x.shape[1], layer.module.momentum
                layer.buffers["running_mean"].lerp_(mean, momentum)
                layer.buffers["running_var"].lerp_(var * n / max(n - 1, 1), momentum)
                layer.buffers["num_batches_tracked"] += 1
        else:
            mean, var = layer.buffers["running_mean"], layer.buffers["running_var"]
        return (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + eps) * gamma.unsqueeze(1) + beta.unsqueeze(1)

    def penalty(self) -> torch.Tensor:
        """(K,) regularization terms, each member with its own l1/l2 factors (Keras: no 0.5)."""
        total = torch.zeros(len(self.specs), device=self.lr.device)
        for layer in self.layers:
            for attr, l1, l2 in layer.penalties:
                w = layer.params[attr].flatten(1)
                total = total + l1.to(w.device) * w.abs().sum(1) + l2.to(w.device) * w.square().sum(1)
        return total

    @torch.no_grad()
    def update(self) -> None:
        """One optimizer step for every member: torch's SGD / Adam formulas, per-member learning rate."""
        if any(r.scheduled for r in self.rates):  # Keras: the schedule at the steps taken so far
            self.lr = torch.tensor([r.at(self.step) for r in self.rates], device=self.lr.device)
        self.step += 1
        o = self.options
        for index, p in enumerate(self.parameters()):
            lr = self.lr.view(-1, *([1] * (p.dim() - 1)))
            g, state = p.grad, self.state.setdefault(index, {})
            if self.kind == "sgd":
                if o["momentum"]:
                    buf = state.get("momentum_buffer")
                    buf = state.setdefault("momentum_buffer", g.clone()) if buf is None else buf.mul_(o["momentum"]).add_(g)
                    g = g.add(buf, alpha=o["momentum"]) if o["nesterov"] else buf
                p.sub_(lr * g)
            else:
                m = state.setdefault("exp_avg", torch.zeros_like(p)).lerp_(g, 1 - o["beta_1"])
                v = state.setdefault("exp_avg_sq", torch.zeros_like(p)).mul_(o["beta_2"]).addcmul_(g, g, value=1 - o["beta_2"])
                bias1, bias2 = 1 - o["beta_1"] ** self.step, 1 - o["beta_2"] ** self.step
                denom = (v.sqrt() / math.sqrt(bias2)).add_(o["epsilon"])
                p.sub_(lr / bias1 * m / denom)
            p.grad = None


def _penalty(model: Sequential, name: str, attr: str):
    found = [p for info in model.layers for module, a, p in info.penalties if module == name and a == attr]
    return found[0] if found else None


def _factors(values: list) -> torch.Tensor:
    return torch.tensor([v or 0.0 for v in values], dtype=torch.float32)


def _leaf(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_(True) for k, v in tensors.items()}


def _scalars(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def fit_group(specs: Sequence[RunSpec], data: TrainData, callbacks: Sequence[Callbacks] | None = None,
              resume: Sequence[Checkpoint] | None = None,
              on_batch: Callable[[int, int, float, float], None] | None = None,
              options: EngineOptions | None = None) -> list[RunResult]:
    """Train ``specs`` together; one :class:`RunResult` per spec, in order, as :func:`fit.fit` gives."""
    data = with_validation(specs[0], data)
    group = Group(specs, data, options or EngineOptions())
    callbacks = {s.id: c for s, c in zip(specs, callbacks or [Callbacks()] * len(specs))}
    histories: dict[str, list[dict[str, float]]] = {s.id: [] for s in specs}
    seconds = {s.id: 0.0 for s in specs}
    batches = math.ceil(len(data.x_train) / specs[0].batch_size)
    if resume:
        group.restore(resume, batches)
        for s, ck in zip(specs, resume):
            histories[s.id], seconds[s.id] = list(ck.history), ck.seconds
    results: dict[str, RunResult] = {}
    for epoch in range(len(histories[specs[0].id]), specs[0].epochs):
        start, first_step = time.perf_counter(), group.step
        loss, accuracy = _train_epoch(group, data, on_batch)
        diverged = [k for k in range(len(group.specs)) if not math.isfinite(loss[k])]
        for k in diverged:
            spec = group.specs[k]
            params = _meta_model(spec).count_params()
            results[spec.id] = RunResult(spec, "diverged", histories[spec.id], params, seconds[spec.id],
                                         error=f"training loss became {loss[k]} in epoch {epoch + 1}")
        if diverged:
            alive = [k for k in range(len(group.specs)) if k not in diverged]
            if not alive:
                group.specs = []
                break
            loss, accuracy = [loss[k] for k in alive], [accuracy[k] for k in alive]
            group.keep(alive)
        held_out = validation_set(specs[0], data)
        val = _evaluate(group, *held_out) if held_out is not None else None
        share = (time.perf_counter() - start) / len(group.specs)  # a member's share of the group's time
        for k, spec in enumerate(group.specs):
            row = {"epoch": epoch + 1, "loss": loss[k], "accuracy": accuracy[k]}
            if val is not None:
                row["val_loss"], row["val_accuracy"] = val[0][k], val[1][k]
            row["lr"] = group.rates[k].at(first_step)
            row["seconds"] = share
            histories[spec.id].append(row)
            seconds[spec.id] += share
            if callbacks[spec.id].on_epoch:
                callbacks[spec.id].on_epoch(row, group.checkpoint(k, epoch + 1, histories[spec.id], seconds[spec.id]))
    if group.specs and not all(s.id in results for s in group.specs):
        results |= _finish(group, data, histories, seconds)
    used = group.engine.record()
    for result in results.values():
        result.engine = used
    return [results[s.id] for s in specs]


def _train_epoch(group: Group, data: TrainData, on_batch) -> tuple[list[float], list[float]]:
    x, y, size = data.x_train, data.y_train, group.specs[0].batch_size
    n, k = x.shape[0], len(group.specs)
    order = torch.stack([torch.randperm(n, generator=g) for g in group.shuffle]).to(x.device)  # (K, N)
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    batches, last = math.ceil(n / size), time.perf_counter()
    for b in range(batches):
        index = order[:, b * size:(b + 1) * size]  # (K, B): each member its own shuffle
        xb, yb = x[index].reshape(k, index.shape[1], -1), y[index]
        with group.engine.autocast():  # bf16: the batched matmuls; the loss in fp32
            out = group.forward(xb, train=True).float()  # (K, B, 10)
        losses = F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1).mean(1)
        losses = losses + group.penalty()
        losses.sum().backward()  # members are independent: each gradient is its own loss's
        group.update()
        loss_sum += losses.detach() * index.shape[1]
        correct += (out.detach().argmax(-1) == yb).sum(1)
        if on_batch and time.perf_counter() - last > PROGRESS_EVERY:
            seen = min((b + 1) * size, n)
            on_batch(b + 1, batches, loss_sum[0].item() / seen, correct[0].item() / seen)
            last = time.perf_counter()
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()


@torch.no_grad()
def _predict(group: Group, x: torch.Tensor) -> torch.Tensor:
    """(K, N, 10) outputs in evaluation mode, every member on the same images."""
    k = len(group.specs)

    def logits(i: int, j: int) -> torch.Tensor:
        with group.engine.autocast():
            return group.forward(x[i:j].reshape(1, j - i, *x.shape[1:]).flatten(2).expand(k, -1, -1), False).float()
    return fill_batches(x.shape[0], eval_batch(group.widest, k, group.engine.eval_bytes), logits, axis=1)


def _evaluate(group: Group, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None):
    """(losses, accuracies, logits): per member, penalty included as in Keras' val_loss."""
    logits = _predict(group, x) if logits is None else logits
    k = logits.shape[0]
    with torch.no_grad():
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1).mean(1)
        losses = (ce + group.penalty()).tolist()
    accuracies = (logits.argmax(-1) == y).double().mean(1).tolist()
    return losses, accuracies, logits


def _finish(group: Group, data: TrainData, histories, seconds) -> dict[str, RunResult]:
    train = _evaluate(group, data.x_train, data.y_train)
    test = _evaluate(group, data.x_test, data.y_test)
    results = {}
    for k, spec in enumerate(group.specs):
        r = RunResult(spec, "done", histories[spec.id], _meta_model(spec).count_params(), seconds[spec.id],
                      train_loss=train[0][k], train_accuracy=train[1][k],
                      test_loss=test[0][k], test_accuracy=test[1][k])
        r.confusion_train = confusion(data.y_train, train[2][k].argmax(1))
        r.confusion_test = confusion(data.y_test, test[2][k].argmax(1))
        r.mistakes = _mistakes(test[2][k], data.y_test)
        r.predictions = prediction_arrays(test[2][k], data.y_test)
        r.weights = {n: t.cpu().contiguous() for n, t in group.member_state(k).items()}
        results[spec.id] = r
    return results
