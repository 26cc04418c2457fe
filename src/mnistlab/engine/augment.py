"""Keras 3's preprocessing and augmentation layers as torch modules, batched on the training device.

``Rescaling`` and ``Normalization`` act in training and evaluation. The ``Random*`` layers act only
in training (evaluation: identity) and draw one value per image from ``self.generator`` (the run's
own, set by the engine like Dropout's), so a run is reproducible and resumes exactly. The geometric
ones build one (N, 2, 3) matrix per batch in Keras' convention (it maps an *output* pixel (x, y) =
(column, row) to the *input* pixel sampled there, as ``keras.ops.image.affine_transform`` reads it)
and sample with one ``F.affine_grid`` + ``F.grid_sample``: no loop over images.

>>> layer = RandomRotation((0.25, 0.25)); layer.train()      # always +90 degrees (counter-clockwise)
>>> layer(torch.eye(5)[None, None]).shape
torch.Size([1, 1, 5, 5])

Keras' ``fill_mode`` on grid_sample (``align_corners=False``: pixel p sits at (2p + 1) / W - 1):
'constant' is 'zeros' around ``fill_value``; 'nearest' is 'border'; 'reflect' (d c b a | a b c d)
is 'reflection'; 'wrap' samples the image padded circularly by a pixel at coordinates modulo W.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), EPSILON)
ADAPT_CHUNK = 8192  # images per pass when Normalization adapts: bounds the float64 copy


def pixel_to_grid(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) pixel-space matrices -> the normalized ``theta`` of ``F.affine_grid``.

    Pixels p = D u + c with D = diag(W/2, H/2), c = ((W-1)/2, (H-1)/2); so theta = [D^-1 M D | D^-1 (M c + t - c)].
    """
    d = matrix.new_tensor([width / 2, height / 2])
    c = matrix.new_tensor([(width - 1) / 2, (height - 1) / 2])
    m, t = matrix[:, :, :2], matrix[:, :, 2]
    linear = m * d.view(1, 1, 2) / d.view(1, 2, 1)
    offset = (m @ c + t - c) / d
    return torch.cat([linear, offset.unsqueeze(2)], dim=2)


def affine_transform(x: torch.Tensor, matrix: torch.Tensor, fill_mode: str = "reflect",
                     fill_value: float = 0.0, interpolation: str = "bilinear") -> torch.Tensor:
    """``keras.ops.image.affine_transform`` on NCHW ``x``: output pixel (x, y) samples input ``matrix @ (x, y, 1)``."""
    n, c, h, w = x.shape
    grid = F.affine_grid(pixel_to_grid(matrix.to(x.dtype), h, w), [n, c, h, w], align_corners=False)
    mode = "bilinear" if interpolation == "bilinear" else "nearest"
    if fill_mode == "wrap":
        size = grid.new_tensor([w, h])
        pixels = torch.remainder(((grid + 1) * size - 1) / 2, size)   # in [0, W): the wrapped coordinate
        grid = (2 * (pixels + 1) + 1) / (size + 2) - 1                # on the image padded by one pixel
        padded = F.pad(x, (1, 1, 1, 1), mode="circular")
        return F.grid_sample(padded, grid, mode=mode, padding_mode="border", align_corners=False)
    if fill_mode == "constant":   # out-of-image corners weigh fill_value, as Keras' map_coordinates
        shifted = x - fill_value if fill_value else x
        out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=False)
        return out + fill_value if fill_value else out
    padding = {"reflect": "reflection", "nearest": "border"}[fill_mode]
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


class Rescaling(nn.Module):
    """Keras' Rescaling: ``x * scale + offset``, in training and evaluation."""

    def __init__(self, scale: float, offset: float = 0.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


class Normalization(nn.Module):
    """Keras' Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)`` (``invert``: the inverse).

    ``shape`` is the statistics' broadcast shape in torch layout: (1, C, 1, 1) per channel of an
    image, (1, n) per feature, () for one value. Given ``mean`` and ``variance`` they are constants
    (Keras counts no weights). Without them the layer *adapts*: :func:`adapt` sets them to the
    training images' statistics before training; they are then buffers in the model's state, so
    checkpoints, weights and exports carry them, and Keras counts 2 x size + 1 non-trainable
    weights (mean, variance, count).
    """

    def __init__(self, shape: Sequence[int], mean=None, variance=None, invert: bool = False, device=None):
        super().__init__()
        self.adapts, self.invert = mean is None, invert
        def values(v, default):  # noqa: E306
            return torch.full(tuple(shape), default, device=device) if v is None else \
                torch.as_tensor(v, dtype=torch.float32, device=device).reshape(shape)
        self.register_buffer("mean", values(mean, 0.0), persistent=self.adapts)
        self.register_buffer("variance", values(variance, 1.0), persistent=self.adapts)
        if self.adapts:
            self.register_buffer("count", torch.zeros((), dtype=torch.int64, device=device))

    @property
    def keras_weights(self) -> int:
        """Non-trainable values Keras counts in ``summary``: adapt_mean, adapt_variance and count."""
        return 2 * self.mean.numel() + 1 if self.adapts else 0

    def forward(self, x):
        std = self.variance.sqrt().clamp_min(EPSILON)
        return self.mean + x * std if self.invert else (x - self.mean) / std

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}, adapts={self.adapts}, invert={self.invert}"


class _Random(nn.Module):
    """A layer drawing one value per image from the run's generator, in training only."""

    def __init__(self):
        super().__init__()
        self.generator = None  # the run's own, set by the engine (None: torch's global generator)

    def uniform(self, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        """(n,) values uniform in [low, high), as keras.random.uniform(minval, maxval)."""
        u = torch.rand(n, generator=self.generator, device=like.device, dtype=like.dtype)
        return low + (high - low) * u


class _RandomAffine(_Random):
    """Base of RandomRotation, RandomTranslation, RandomZoom: a matrix per image, one grid per batch."""

    def __init__(self, fill_mode: str = "reflect", interpolation: str = "bilinear", fill_value: float = 0.0):
        super().__init__()
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, fill_value

    def matrices(self, x: torch.Tensor) -> torch.Tensor:  # (N, 2, 3): output pixel -> input pixel
        raise NotImplementedError

    def forward(self, x):
        if not self.training:
            return x
        return affine_transform(x, self.matrices(x), self.fill_mode, self.fill_value, self.interpolation)


def _rows(*columns: torch.Tensor) -> torch.Tensor:
    """Six (N,) columns a0 a1 a2 b0 b1 b2 -> (N, 2, 3)."""
    return torch.stack(columns, dim=1).view(-1, 2, 3)


class RandomRotation(_RandomAffine):
    """Rotate each image by ``factor`` x 360 degrees drawn in [lower, upper]; positive is counter-clockwise.

    Keras' ``_compute_affine_matrix`` about the centre ((W-1)/2, (H-1)/2): input = R(angle) (output - c) + c
    with R = [[cos, -sin], [sin, cos]] in (column, row) coordinates, rows pointing down.
    """

    def __init__(self, factor: tuple[float, float], **fill):
        super().__init__(**fill)
        self.factor = factor

    def matrices(self, x):
        n, _, h, w = x.shape
        angle = self.uniform(n, self.factor[0] * 360.0, self.factor[1] * 360.0, x) * (math.pi / 180.0)
        cos, sin = angle.cos(), angle.sin()
        cx, cy = (w - 1) / 2, (h - 1) / 2
        return _rows(cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos)


class RandomTranslation(_RandomAffine):
    """Shift each image by (height, width) fractions of its size drawn in the factors' ranges:
    output (x, y) = input (x - dx, y - dy), dy drawn first as in Keras."""

    def __init__(self, height: tuple[float, float], width: tuple[float, float], **fill):
        super().__init__(**fill)
        self.height, self.width = height, width

    def matrices(self, x):
        n, _, h, w = x.shape
        dy = self.uniform(n, *self.height, x) * h
        dx = self.uniform(n, *self.width, x) * w
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        return _rows(one, zero, -dx, zero, one, -dy)


class RandomZoom(_RandomAffine):
    """Zoom each image by 1 + a value drawn in the factors' ranges: above 1 zooms out (Keras: a
    positive factor), below 1 zooms in; ``width=None`` keeps the aspect (the height's draw)."""

    def __init__(self, height: tuple[float, float], width: tuple[float, float] | None, **fill):
        super().__init__(**fill)
        self.height, self.width = height, width

    def matrices(self, x):
        n, _, h, w = x.shape
        zy = self.uniform(n, 1.0 + self.height[0], 1.0 + self.height[1], x)
        zx = zy if self.width is None else self.uniform(n, 1.0 + self.width[0], 1.0 + self.width[1], x)
        zero = torch.zeros_like(zx)
        return _rows(zx, zero, (w - 1) / 2 * (1 - zx), zero, zy, (h - 1) / 2 * (1 - zy))


class RandomFlip(_Random):
    """Flip each image with probability 1/2 (a draw u <= 0.5). Keras 3 uses the *same* draw for both
    axes in 'horizontal_and_vertical': an image is flipped both ways or not at all."""

    def __init__(self, horizontal: bool, vertical: bool):
        super().__init__()
        self.horizontal, self.vertical = horizontal, vertical

    def forward(self, x):
        if not self.training:
            return x
        flips = (self.uniform(x.shape[0], 0.0, 1.0, x) <= 0.5).view(-1, 1, 1, 1)
        if self.horizontal:
            x = torch.where(flips, x.flip(3), x)
        if self.vertical:
            x = torch.where(flips, x.flip(2), x)
        return x


class RandomContrast(_Random):
    """``(x - mean) * f + mean`` per image and channel (mean over its pixels), f drawn in
    [1 - lower, 1 + upper], then clipped to ``value_range``."""

    def __init__(self, factor: tuple[float, float], value_range: tuple[float, float] = (0.0, 255.0)):
        super().__init__()
        self.factor, self.value_range = factor, value_range

    def forward(self, x):
        if not self.training:
            return x
        f = self.uniform(x.shape[0], 1.0 - self.factor[0], 1.0 + self.factor[1], x).view(-1, 1, 1, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)
        return ((x - mean) * f + mean).clamp(*self.value_range)


AUGMENTATIONS = (RandomRotation, RandomTranslation, RandomZoom, RandomFlip, RandomContrast)
PREPROCESSING = (Rescaling, Normalization) + AUGMENTATIONS


@torch.no_grad()
def adapt(model: nn.Module, x: torch.Tensor) -> None:
    """Set every adapting Normalization of ``model`` to the statistics of ``x`` (the training images
    as the data holds them), as Keras' ``adapt()``: the mean and population variance, over every
    axis but the kept one, of the values reaching the layer through the layers before it
    (preprocessing only: the builder checks), in evaluation mode, summed in float64.
    """
    children = [m for _, m in model.named_children()]
    shape = getattr(model, "torch_input_shape", tuple(x.shape[1:]))
    was_training = model.training
    model.eval()
    try:
        for index, layer in enumerate(children):
            if isinstance(layer, Normalization) and layer.adapts:
                def chunks(before=children[:index]):
                    for i in range(0, x.shape[0], ADAPT_CHUNK):
                        out = x[i:i + ADAPT_CHUNK].reshape(-1, *shape)
                        for module in before:
                            out = module(out)
                        yield out.double()
                mean, var = _mean_var(chunks, tuple(layer.mean.shape))
                layer.mean.copy_(mean.reshape(layer.mean.shape))
                layer.variance.copy_(var.reshape(layer.variance.shape))
                layer.count.fill_(x.shape[0])
    finally:
        model.train(was_training)


def _mean_var(chunks, kept: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance (two passes) of what ``chunks()`` yields, per position of the
    statistics' shape ``kept`` (1 on the reduced axes; () reduces all)."""
    def dims(t: torch.Tensor) -> list[int]:
        return [d for d in range(t.dim()) if not kept or kept[d] == 1]
    sums, count = 0.0, 0
    for t in chunks():
        sums, count = sums + t.sum(dim=dims(t), keepdim=True), count + t.numel()
    count //= max(1, math.prod(kept))
    mean = sums / count
    var = sum(((t - mean) ** 2).sum(dim=dims(t), keepdim=True) for t in chunks()) / count
    return mean, var
