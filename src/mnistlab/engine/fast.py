"""A training step for MLPs with a hand-written backward on oneDNN's GEMM: no autograd graph.

``step(xb, yb)`` computes what ``loss = F.cross_entropy(model(xb), yb) + model.regularization_loss();
loss.backward()`` computes, without an autograd graph: the same dropout masks and noise (drawn from
each module's ``.generator`` in the same order), the same BatchNorm running statistics, and every
``p.grad`` written (Dense kernels' grads are new tensors each step, the others overwritten in
place), ready for ``optimizer.step()``.

Why: with the GEMMs on oneDNN (:mod:`mnistlab.onednn`), what remains of an MLP step on the CPU is
overhead: the autograd graph, a Python ``autograd.Function`` per layer, ``zero_grad``. W1 (784-364-
212-10, batch 128, Adam, 2 threads): docs/PERFORMANCE.md has the figures.

>>> if supports(model):
...     step = FastStep(model, batch_size)
...     loss, logits = step(xb, yb)     # fills every p.grad; then optimizer.step() as usual
...     optimizer.step()
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .layers import Dropout, Flatten, GaussianNoise, Sequential

aten = torch.ops.aten
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

# elementwise activations: type -> (in-place forward, backward from the output y), as autograd computes them
ACTIVATIONS: dict[type, tuple[Callable, Callable]] = {
    nn.ReLU: (lambda m, y: y.relu_(), lambda m, g, y: aten.threshold_backward(g, y, 0)),
    nn.Sigmoid: (lambda m, y: y.sigmoid_(), lambda m, g, y: aten.sigmoid_backward(g, y)),
    nn.Tanh: (lambda m, y: y.tanh_(), lambda m, g, y: aten.tanh_backward(g, y)),
    nn.ELU: (lambda m, y: F.elu_(y, m.alpha), lambda m, g, y: aten.elu_backward(g, m.alpha, 1, 1, True, y)),
    nn.SELU: (lambda m, y: torch.selu_(y), lambda m, g, y: aten.elu_backward(g, SELU_ALPHA, SELU_SCALE, 1, True, y)),
}


class _Slot:
    """One module's place in the step: its buffers and what its forward saved for its backward."""

    def __init__(self, module: nn.Module, batch: int, inplace: bool, input_grad: bool):
        self.module, self.batch = module, batch
        self.inplace = inplace        # may overwrite its input: a Linear's or BatchNorm's output, which no other backward reads
        self.input_grad = input_grad  # False for the first module with parameters: nothing before it learns
        self.buffers: dict[str, torch.Tensor] = {}
        self.saved: tuple = ()

    def take(self, key: str, n: int, width: int) -> torch.Tensor:
        """(n, width) rows of a buffer allocated once for (batch, width); a longer batch reallocates."""
        buf = self.buffers.get(key)
        if buf is None or buf.shape[0] < n or buf.shape[1] != width:
            buf = self.buffers[key] = torch.empty(max(n, self.batch), width)
        return buf[:n]


def _linear_forward(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # x (n, in) -> x W^T + b (n, out)
    s.saved = (x,)
    return onednn.linear_forward(x, s.module.weight.detach(), s.module.bias)


def _linear_backward(s: _Slot, g: torch.Tensor) -> torch.Tensor | None:   # g (n, out)
    (x,), w = s.saved, s.module.weight
    w.grad = onednn.matmul_t(g.t(), x.t())   # dW = g^T x (out, in): a new tensor, as autograd's would be
    if s.module.bias is not None:
        torch.sum(g, 0, out=s.module.bias.grad)
    if not s.input_grad:
        return None
    return onednn.matmul_t(g, w.detach().t())   # dx = g W (n, in)


def _act_forward(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # elementwise (n, f); keeps its output
    y = x if s.inplace else s.take("out", *x.shape).copy_(x)
    ACTIVATIONS[type(s.module)][0](s.module, y)
    s.saved = (y,)
    return y


def _act_backward(s: _Slot, g: torch.Tensor) -> torch.Tensor:
    return ACTIVATIONS[type(s.module)][1](s.module, g, s.saved[0])


def _dropout_forward(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # x * (rand < keep) / keep, as Dropout draws it
    m = s.module
    s.saved = ()
    if not m.training or m.p == 0:
        return x
    keep = 1.0 - m.p
    mask = torch.rand(x.shape, generator=m.generator, device=x.device, dtype=x.dtype) < keep   # (n, f) bool
    y = x.mul_(mask) if s.inplace else torch.mul(x, mask, out=s.take("out", *x.shape))
    s.saved = (mask, keep)
    return y.div_(keep)


def _dropout_backward(s: _Slot, g: torch.Tensor) -> torch.Tensor:
    if not s.saved:
        return g
    mask, keep = s.saved
    return g.div_(keep).mul_(mask)


def _noise_forward(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # x + stddev * randn, as GaussianNoise draws it
    m = s.module
    if not m.training:
        return x
    return torch.randn(x.shape, generator=m.generator, device=x.device, dtype=x.dtype).mul_(m.stddev).add_(x)


def _batchnorm_forward(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # (n, C): torch's own kernel, as nn.BatchNorm1d
    m = s.module
    if m.training:
        if len(x) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        m.num_batches_tracked += 1
        f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
    else:
        f = 0.0
    y, mean, inv_std = aten.native_batch_norm(x, m.weight.detach(), m.bias.detach(), m.running_mean, m.running_var,
                                              m.training, f, m.eps)   # updates the running statistics in place
    s.saved = (x, mean, inv_std, m.training)
    return y


def _batchnorm_backward(s: _Slot, g: torch.Tensor) -> torch.Tensor | None:   # g (n, C)
    m, (x, mean, inv_std, training) = s.module, s.saved
    gx, gw, gb = aten.native_batch_norm_backward(g, x, m.weight.detach(), m.running_mean, m.running_var, mean,
                                                 inv_std, training, m.eps, [s.input_grad, True, True])
    m.weight.grad.copy_(gw)
    m.bias.grad.copy_(gb)
    return gx


def _same(s: _Slot, x: torch.Tensor) -> torch.Tensor:   # Flatten of a flat input, Identity, noise's backward
    return x


KINDS: dict[type, tuple[Callable, Callable]] = {   # module type -> (forward(slot, x), backward(slot, g))
    nn.Linear: (_linear_forward, _linear_backward),
    onednn.Linear: (_linear_forward, _linear_backward),
    nn.BatchNorm1d: (_batchnorm_forward, _batchnorm_backward),
    Dropout: (_dropout_forward, _dropout_backward),
    GaussianNoise: (_noise_forward, _same),
    Flatten: (_same, _same),   # of flat input, or one channel: (H, W, C) order is (C, H, W) order
    nn.Identity: (_same, _same),
} | {act: (_act_forward, _act_backward) for act in ACTIVATIONS}


def supports(model: nn.Module) -> bool:
    """True when :class:`FastStep` computes this model's step: a flat-input MLP of :data:`KINDS`, float32 on CPU,
    outside bf16 autocast (EngineOptions.resolved() turns the step off for bf16: its GEMMs are fp32 only)."""
    if not isinstance(model, Sequential) or not onednn.available() or torch.is_autocast_enabled("cpu"):
        return False
    if any(isinstance(m, onednn.Linear) and not m.use_onednn for m in model.modules()):
        return False   # EngineOptions(dense_gemm="torch"): the autograd reference path
    modules = list(model.children())
    tensors = list(model.parameters()) + list(model.buffers())
    if not all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return False
    shape = model.torch_input_shape
    if len(shape) != 1 and not (modules and type(modules[0]) is Flatten and shape[0] == 1):
        return False
    for m in modules:
        if type(m) not in KINDS \
                or (type(m) is nn.ELU and m.alpha < 0) \
                or (type(m) is nn.BatchNorm1d and not (m.affine and m.track_running_stats)):
            return False
    return True


class FastStep:
    """Forward, loss and backward of ``model`` on one batch; buffers sized for ``batch_size`` rows.

    Follows ``model.training`` as the modules do. Each call writes every ``p.grad``: Dense kernels get
    new tensors, the other grads are allocated here once and overwritten (bound again if a caller set
    them to None), so ``optimizer.zero_grad()`` is not needed.
    """

    def __init__(self, model: Sequential, batch_size: int):
        if not supports(model):
            raise ValueError(f"FastStep handles flat-input MLPs of {sorted(k.__name__ for k in KINDS)} on the CPU "
                             f"in float32; got {model}")
        self.model = model
        kernels = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}   # assigned each step
        self.grads = [(p, p.grad if p.grad is not None and p.grad.is_contiguous() else torch.zeros_like(p))
                      for p in model.parameters() if id(p) not in kernels]
        self._bind_grads()
        modules = list(model.children())
        first = next((i for i, m in enumerate(modules) if any(True for _ in m.parameters())), len(modules))
        self.slots = [_Slot(m, batch_size, i > 0 and isinstance(modules[i - 1], (nn.Linear, nn.BatchNorm1d)),
                            i > first)
                      for i, m in enumerate(modules)]
        self.learning = self.slots[first:]   # backward runs over these, last first
        self.penalties = [(getattr(getattr(model, name), attr), p.l1, p.l2)
                          for info in model.layers for name, attr, p in info.penalties]
        self.minus_one = torch.full((1, 1), -1.0)

    def _bind_grads(self) -> None:
        for p, grad in self.grads:
            if p.grad is not grad:
                p.grad = grad

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits), both detached, for ``xb`` (n, 784) or (n, 1, 28, 28) and labels ``yb`` (n,)."""
        self._bind_grads()
        n = len(xb)
        x = xb.reshape(n, -1).contiguous()   # (n, features): the model's input is flat or flattened first
        for s in self.slots:
            x = KINDS[type(s.module)][0](s, x)
        log_p = torch.log_softmax(x, 1)   # (n, classes)
        loss = F.nll_loss(log_p, yb)       # = F.cross_entropy(x, yb)
        if self.penalties:
            loss = loss + self.model.regularization_loss()
        # dloss/dlogits = (softmax - onehot(y)) / n, (n, classes)
        g = log_p.exp_().scatter_add_(1, yb.unsqueeze(1), self.minus_one.expand(n, 1)).div_(n)
        for s in reversed(self.learning):
            g = KINDS[type(s.module)][1](s, g)
        for w, l1, l2 in self.penalties:   # d(l1 |w| + l2 w^2) = l1 sign(w) + 2 l2 w
            if l1:
                w.grad.add_(w.sign(), alpha=l1)
            if l2:
                w.grad.add_(w, alpha=2 * l2)
        return loss, x.clone()   # logits copied out of a buffer the next step overwrites
