"""Keras 3's preprocessing and augmentation layers as layer builders: the Keras signatures and
defaults, their arguments checked as Keras checks them, the torch modules from :mod:`.augment`.

Each builder is ``builder(ctx, *Keras arguments) -> output shape`` like those in :mod:`.layers`,
which registers them. ``seed=`` is accepted and ignored: the run's seed governs every draw.

    "Rescaling(2.0, offset=-1.0)"                   # pixels arrive as x / 255 in [0, 1]: to [-1, 1]
    "Normalization(mean=0.1307, variance=0.0949)"   # pytorch/examples' MNIST statistics
    "Normalization()"                               # adapts to the training images, as adapt() does
    "RandomRotation(0.05, fill_mode='constant')"    # +-18 degrees, zeros outside
"""

from __future__ import annotations

import math
from typing import Any

from .augment import (Normalization, RandomContrast, RandomFlip, RandomRotation, RandomTranslation,
                      RandomZoom, Rescaling)

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("nearest", "bilinear")
FLIP_MODES = {"horizontal": (True, False), "vertical": (False, True), "horizontal_and_vertical": (True, True)}
# what may come before a Normalization that adapts: its statistics are those of the training
# images through these (augmentation is the identity there), never through weights still at init
ADAPTS_AFTER = {"Rescaling", "Normalization", "Flatten", "RandomRotation", "RandomTranslation", "RandomZoom",
                "RandomFlip", "RandomContrast"}


def _number(c, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise c.fail(f"{what} must be a number, got {value!r}")
    return float(value)


def _range(c, value: Any, what: str, low: float, high: float, open_low: bool = False) -> tuple[float, float]:
    """Keras' factor: a number f means [-f, f], a pair (a, b) means [a, b]; each within [low, high]."""
    pair = value if isinstance(value, (tuple, list)) and len(value) == 2 else None

    def ok(v: Any) -> bool:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return number and (v > low if open_low else v >= low) and v <= high
    if not all(ok(v) for v in (pair if pair is not None else (value,))):
        bound = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise c.fail(f"{what} must be a number or a pair (lower, upper), each in {bound}, got {value!r}")
    if pair is None:
        return (-abs(float(value)), abs(float(value)))
    lower, upper = sorted(float(v) for v in pair)
    return lower, upper


def _fill(c, fill_mode: Any, interpolation: Any, fill_value: Any) -> dict[str, Any]:
    if fill_mode not in FILL_MODES:
        raise c.fail(f"fill_mode must be one of {', '.join(map(repr, FILL_MODES))}, got {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise c.fail(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    return {"fill_mode": fill_mode, "interpolation": interpolation, "fill_value": _number(c, fill_value, "fill_value")}


def rescaling(c, scale, offset=0.0) -> tuple:
    c.add(Rescaling(_number(c, scale, "scale"), _number(c, offset, "offset")))
    return c.shape


def normalization(c, axis=-1, mean=None, variance=None, invert=False) -> tuple:
    """Per channel of an image or per feature of a flat input (axis=-1), or one value (axis=None)."""
    if axis not in (-1, None, len(c.shape) - 1):
        raise c.fail(f"axis must be -1 (per channel or feature) or None (one mean and variance), got {axis!r}")
    if (mean is None) != (variance is None):
        raise c.fail(f"needs both mean= and variance=, or neither to adapt to the training images; "
                     f"got mean={mean!r}, variance={variance!r}")
    size = 1 if axis is None else c.shape[-1]
    shape = () if axis is None else ((1, size, 1, 1) if len(c.shape) == 3 else (1, size))
    if mean is None:
        earlier = []
        previous = c.previous
        while previous is not None:
            earlier.append(previous)
            previous = previous.previous
        if blocking := [p for p in earlier if p.kind not in ADAPTS_AFTER]:
            raise c.fail(f"without mean= and variance= adapts to the training images, so it must come before "
                         f"layers with weights like {blocking[-1].name}; move it up or give mean= and variance=")
    else:
        mean, variance = (_values(c, v, what, size) for v, what in ((mean, "mean"), (variance, "variance")))
        if min(variance) < 0:
            raise c.fail(f"variance must be >= 0, got {variance!r}")
    if not isinstance(invert, bool):
        raise c.fail(f"invert must be True or False, got {invert!r}")
    c.add(Normalization(shape, mean, variance, invert, device=c.device))
    return c.shape


def _values(c, value: Any, what: str, size: int) -> list[float]:
    """A number (every channel) or one number per channel/feature."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    numbers = [_number(c, v, what) for v in values]
    if len(numbers) == 1:
        return numbers * size
    if len(numbers) != size:
        raise c.fail(f"{what} has {len(numbers)} values but its input has {size} channels or features")
    return numbers


def random_rotation(c, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0):
    """factor: fractions of a full turn (0.1 = +-36 degrees); positive rotates counter-clockwise."""
    c.image()
    c.add(RandomRotation(_range(c, factor, "factor", -1.0, 1.0), **_fill(c, fill_mode, interpolation, fill_value)))
    return c.shape


def random_translation(c, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                       fill_value=0.0):
    """Factors: fractions of the image's height and width (0.1 = up to 2.8 pixels of 28)."""
    c.image()
    c.add(RandomTranslation(_range(c, height_factor, "height_factor", -1.0, 1.0),
                            _range(c, width_factor, "width_factor", -1.0, 1.0),
                            **_fill(c, fill_mode, interpolation, fill_value)))
    return c.shape


def random_zoom(c, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                fill_value=0.0):
    """Factors: zoom 1 + f, f in (-1, 1]; positive zooms out (the digit gets smaller)."""
    c.image()
    width = None if width_factor is None else _range(c, width_factor, "width_factor", -1.0, 1.0, open_low=True)
    c.add(RandomZoom(_range(c, height_factor, "height_factor", -1.0, 1.0, open_low=True), width,
                     **_fill(c, fill_mode, interpolation, fill_value)))
    return c.shape


def random_flip(c, mode="horizontal_and_vertical", seed=None):
    c.image()
    if mode not in FLIP_MODES:
        raise c.fail(f"mode must be one of {', '.join(map(repr, FLIP_MODES))}, got {mode!r}")
    c.add(RandomFlip(*FLIP_MODES[mode]))
    return c.shape


def random_contrast(c, factor, value_range=(0, 255), seed=None):
    """Contrast f in [1 - lower, 1 + upper]: a number means lower = upper = factor, as Keras documents
    (Keras 3.x's code draws from [1, 1 + factor] for a number; write (0, f) for that). Pixels arrive
    here in [0, 1]: value_range=(0, 1) clips there, Keras' default (0, 255) hardly clips."""
    c.image()
    if isinstance(factor, (tuple, list)):
        lower, upper = _range(c, factor, "factor", 0.0, 1.0)
    else:
        lower = upper = _range(c, factor, "factor", 0.0, 1.0)[1]
    if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2) \
            or _number(c, value_range[0], "value_range") >= _number(c, value_range[1], "value_range"):
        raise c.fail(f"value_range must be (low, high) with low < high, e.g. (0, 1), got {value_range!r}")
    c.add(RandomContrast((lower, upper), (float(value_range[0]), float(value_range[1]))))
    return c.shape


BUILDERS = {"Rescaling": rescaling, "Normalization": normalization, "RandomRotation": random_rotation,
            "RandomTranslation": random_translation, "RandomZoom": random_zoom, "RandomFlip": random_flip,
            "RandomContrast": random_contrast}
IMAGE_ONLY = {"RandomRotation", "RandomTranslation", "RandomZoom", "RandomFlip", "RandomContrast"}
