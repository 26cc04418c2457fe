"""Keras initializers, regularizers and activations by name, with Keras 2 defaults, as registries.

    >>> INITIALIZERS.build(parse_call("RandomNormal(stddev=0.05)"))(layer.weight)   # fills in place
    >>> REGULARIZERS.build(parse_call("l2(0.01)"))(layer.weight)                    # the loss term

Names fold case and underscores like Keras' own lookup: ``HeNormal``, ``he_normal``, ``henormal``.
Initializers take ``seed=`` and ignore it: the run's seed governs every draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import LayerError
from ..registry import Registry

def _fans(t: torch.Tensor) -> tuple[float, float]:
    if t.dim() in (2, 4):      # Linear (out, in) or Conv2d (out, in, kh, kw): Keras' fans, same numbers
        area = t[0, 0].numel()
        return t.shape[1] * area, t.shape[0] * area
    return math.sqrt(t.numel()), math.sqrt(t.numel())  # Keras' rule for other shapes (biases)


def variance_scaling(scale=1.0, mode="fan_in", distribution="normal", seed=None):
    """Keras 2.3: 'normal' is truncated at 2 sigma and widened so that std = sqrt(scale / n)."""
    def fill(t):
        fan_in, fan_out = _fans(t)
        std = math.sqrt(scale / {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode])
        if distribution == "uniform":
            return nn.init.uniform_(t, -math.sqrt(3.0) * std, math.sqrt(3.0) * std)
        s = std / 0.87962566103423978                  # std of a unit normal truncated to [-2, 2]
        return nn.init.trunc_normal_(t, 0.0, s, -2 * s, 2 * s)
    return fill


_INITIALIZERS: dict[str, Callable] = {
    "random_normal": lambda mean=0.0, stddev=0.05, seed=None: lambda t: nn.init.normal_(t, mean, stddev),
    "random_uniform": lambda minval=-0.05, maxval=0.05, seed=None: lambda t: nn.init.uniform_(t, minval, maxval),
    "truncated_normal": lambda mean=0.0, stddev=0.05, seed=None:
        lambda t: nn.init.trunc_normal_(t, mean, stddev, mean - 2 * stddev, mean + 2 * stddev),
    "glorot_uniform": lambda seed=None: variance_scaling(1.0, "fan_avg", "uniform"),   # Keras' default kernel
    "glorot_normal": lambda seed=None: variance_scaling(1.0, "fan_avg", "normal"),
    "he_normal": lambda seed=None: variance_scaling(2.0, "fan_in", "normal"),
    "he_uniform": lambda seed=None: variance_scaling(2.0, "fan_in", "uniform"),
    "lecun_normal": lambda seed=None: variance_scaling(1.0, "fan_in", "normal"),
    "lecun_uniform": lambda seed=None: variance_scaling(1.0, "fan_in", "uniform"),
    "variance_scaling": variance_scaling,
    "constant": lambda value=0.0: lambda t: nn.init.constant_(t, value),
    "zeros": lambda: nn.init.zeros_, "ones": lambda: nn.init.ones_,
}
INITIALIZERS = Registry("initializer", LayerError, folded=True)
for _name, _builder in _INITIALIZERS.items():
    INITIALIZERS.register(_name, _builder, aliases={"random_normal": ("normal",),  # Keras 2 aliases
                                                    "random_uniform": ("uniform",)}.get(_name, ()))


@dataclass(frozen=True)
class Penalty:
    """A weight penalty added to the loss as Keras does: l1 * sum|w| + l2 * sum(w**2) (no 0.5)."""
    l1: float = 0.0
    l2: float = 0.0

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        terms = ([self.l1 * w.abs().sum()] if self.l1 else []) + ([self.l2 * w.square().sum()] if self.l2 else [])
        return sum(terms[1:], terms[0]) if terms else w.new_zeros(())


REGULARIZERS = Registry("regularizer", LayerError)  # Keras 2 spells l2(l=0.01); tf.keras l2(l2=0.01): both work
REGULARIZERS.register("l1", lambda l=0.01, l1=None: Penalty(l1=l if l1 is None else l1))  # noqa: E741
REGULARIZERS.register("l2", lambda l=0.01, l2=None: Penalty(l2=l if l2 is None else l2))  # noqa: E741
REGULARIZERS.register("l1_l2", lambda l1=0.01, l2=0.01: Penalty(l1, l2))
REGULARIZERS.register("L1L2", lambda l1=0.0, l2=0.0: Penalty(l1, l2))

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {   # softmax on dim 1: Keras' last axis, flat or NCHW
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU, "selu": nn.SELU,
    "softmax": lambda: nn.Softmax(dim=1), "softplus": nn.Softplus, "softsign": nn.Softsign, "linear": nn.Identity,
}


