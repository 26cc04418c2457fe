"""Will a model train in this machine's memory? Estimated from shapes alone, before anything is allocated.

Training holds, per parameter, its value, its gradient and the optimizer's state (Adam, the default:
two moments): about 4 float32 copies. Per batch, each layer's output is kept for the backward pass,
its activation adds one more and the backward pass a gradient: about 3 float32 copies of every layer
output, times the batch size. A model built on torch's 'meta' device has every count and shape and
costs nothing, so a ``Dense(10**12)`` is refused with its size instead of failing to allocate.

>>> check_fits(build_model(calls, device="meta"), batch_size=128)   # LayerError naming the layer and GB
"""

from __future__ import annotations

import math
import os

import torch

from ..errors import LayerError
from .layers import Sequential

FLOAT = 4              # bytes: models train in float32
PARAM_COPIES = 4       # weights, gradients, two optimizer moments
ACTIVATION_COPIES = 3  # a layer's output, its activation's output, and a gradient in the backward pass
DATA_BYTES = 70_000 * 784 * FLOAT  # MNIST-size train + test sets, held on the device as one tensor each


def layer_bytes(model: Sequential, batch_size: int) -> list[int]:
    """Estimated training bytes of each Keras layer: its parameters' copies plus its outputs' for a batch."""
    return [FLOAT * (PARAM_COPIES * info.params + ACTIVATION_COPIES * batch_size * math.prod(info.output_shape))
            for info in model.layers]


def memory_bytes() -> int | None:
    """Memory a run can use: the GPU's where CUDA is (the runner trains there), else physical RAM; None: unknown."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: nothing to compare with
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_fits(model: Sequential, batch_size: int, available: int | None = None) -> None:
    """Raise :class:`LayerError` at the largest layer if training ``model`` would need more than ``available``
    bytes (default: :func:`memory_bytes`)."""
    available = memory_bytes() if available is None else available
    per_layer = layer_bytes(model, batch_size)
    params = model.count_params()[0]
    total = sum(per_layer) + DATA_BYTES + FLOAT * batch_size * math.prod(model.input_shape)
    if available is None or total <= available:
        return
    index = max(range(len(per_layer)), key=per_layer.__getitem__)
    outputs = sum(FLOAT * ACTIVATION_COPIES * batch_size * math.prod(i.output_shape) for i in model.layers)
    raise LayerError(f"the model needs about {_gb(total)} of memory to train but this machine has {_gb(available)}: "
                     f"{params:,} parameters x {PARAM_COPIES} copies (weights, gradients, optimizer state) take "
                     f"{_gb(FLOAT * PARAM_COPIES * params)}, layer outputs for a batch of {batch_size} "
                     f"{_gb(outputs)}; this layer alone {_gb(per_layer[index])}: make it smaller",
                     index, model.layers[index].name)
