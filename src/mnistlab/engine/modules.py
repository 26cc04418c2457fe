"""Torch modules for Keras layers that torch lacks or computes differently: GaussianNoise and
Dropout drawing from the run's own generator, AveragePooling2D with Keras' 'same' padding, and
Flatten in Keras' (H, W, C) order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

class GaussianNoise(nn.Module):
    """x + N(0, stddev^2) in training, x in evaluation, like Keras' GaussianNoise.

    Draws from ``self.generator`` (the run's own, set by the engine; None: torch's global one), so a
    run draws the same noise whether it trains alone or in a group.
    """

    def __init__(self, stddev: float):
        super().__init__()
        self.stddev, self.generator = stddev, None

    def forward(self, x):
        if not self.training:
            return x
        return x + self.stddev * torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)


class Dropout(nn.Module):
    """Keras' Dropout: in training, zero a fraction ``p`` of the values and scale the rest by 1 / (1 - p).

    Masks come from ``self.generator`` as in :class:`GaussianNoise`: ``rand(x.shape) < 1 - p``.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p, self.generator = p, None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * (torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) < keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AvgPoolSame(nn.Module):
    """TF 'same' average pooling with uneven padding (left, right, top, bottom): pads left out of means."""

    def __init__(self, kernel, stride, pad):
        super().__init__()
        self.kernel, self.stride, self.pad = kernel, stride, pad

    def forward(self, x):
        pool = lambda t: F.avg_pool2d(F.pad(t, self.pad), self.kernel, self.stride)  # noqa: E731
        return pool(x) / pool(x.new_ones((1, 1) + tuple(x.shape[2:])))




class Flatten(nn.Module):
    """Keras' Flatten: an image's features in (H, W, C) order, so a Dense kernel after it has Keras'
    layout and exported weights mean the same in both worlds. (N, C, H, W) -> (N, H*W*C); flat
    input passes through. On a channels-last tensor the permute is free (a view)."""

    keras_order = True  # False: torch's (C, H, W) order, for runs of engine numerics 1 (mnistlab.numerics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 and self.keras_order else x.flatten(1)
