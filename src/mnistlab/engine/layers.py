"""Keras layer, initializer and regularizer names -> torch modules, with Keras 2 defaults.

A model is a list of :class:`~mnistlab.calls.Call` in Keras vocabulary; :func:`build_model` turns it
into a :class:`Sequential` whose summary and parameter counts equal Keras' own::

    >>> calls = [parse_call(s) for s in ["Dense(364, activation='relu')", "Dense(10, activation='softmax')"]]
    >>> model = build_model(calls, x_train.shape[1:])   # (784,) or (1, 28, 28): either fits either model
    >>> model.count_params()                  # total, trainable, non-trainable
    (289390, 289390, 0)
    >>> model(torch.rand(128, 784)).shape     # logits: the final softmax is left to the loss
    torch.Size([128, 10])
    >>> loss = F.cross_entropy(model(x), y) + model.regularization_loss()

Shapes are reported in Keras' layout, ``(features,)`` or ``(H, W, C)``; tensors are NCHW and
Flatten orders features (H, W, C) as Keras does, so weights mean the same in both worlds.
Registries (``mnistlab.registry``): adding a layer is one entry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import LayerError
from ..registry import Registry
from ..spec.calls import Call, did_you_mean
from .initializers import ACTIVATIONS, INITIALIZERS, REGULARIZERS, Penalty  # noqa: F401 - Penalty re-exported
from .modules import AvgPoolSame, Dropout, Flatten, GaussianNoise  # noqa: F401 - re-exported
from .onednn import Linear
from .preprocessing import BUILDERS as PREPROCESSING_BUILDERS, IMAGE_ONLY

Shape = tuple[int, ...]  # Keras layout, no batch axis: (features,) or (H, W, C)


def _lookup(value: Any, registry: Registry, what: str, owner: str) -> Any:
    """An entry given as ``'he_normal'``, ``HeNormal()`` or ``RandomNormal(stddev=0.1)``, built."""
    call = Call(value) if isinstance(value, str) else value
    if not isinstance(call, Call):
        raise LayerError(f"{owner} {what} must be a name like {next(iter(registry))!r} or a call, got {value!r}")
    if call.name not in registry:
        raise LayerError(f"{owner} got unknown {what} {call.name!r}; {did_you_mean(call.name, registry)}")
    return registry.build(call)


# ---- layer builders: builder(ctx, *Keras args) -> output shape; ctx collects the torch modules

@dataclass
class _Ctx:
    name: str                  # Keras layer name, 'dense_1'
    kind: str                  # Keras class, 'Dense'
    shape: Shape               # input shape, Keras layout
    previous: _Ctx | None      # the layer before, None for the first
    device: Any = None
    out: Shape = ()            # output shape, once built
    modules: list = field(default_factory=list)     # [(torch name, module)] in order
    penalties: list = field(default_factory=list)   # [(torch module name, attribute, Penalty)]
    kernel: str | None = None                       # torch module holding the kernel
    activation: str = "linear"

    def fail(self, message: str) -> LayerError:
        return LayerError(f"{self.kind} {message}")

    def got(self) -> str:  # "(None, 784) after flatten_1", for messages
        return f"{(None, *self.shape)} " + (f"after {self.previous.name}" if self.previous else "from the model input")

    def add(self, module: nn.Module, suffix: str = "") -> nn.Module:
        self.modules.append((self.name + suffix, module))
        return module

    def features(self) -> int:
        if len(self.shape) != 1:
            raise self.fail(f"needs a flat input (None, n) but gets {self.got()}; put Flatten() before {self.kind}")
        return self.shape[0]

    def image(self) -> Shape:
        if len(self.shape) != 3:
            fix = (f"put {self.kind} layers before Flatten" if self.previous
                   else "give the first layer input_shape=(28, 28, 1)")
            raise self.fail(f"needs an image input (H, W, C) but gets {self.got()}; {fix}")
        return self.shape

    def window(self, k: tuple[int, int], s: tuple[int, int], padding: str) -> tuple[Shape, tuple[int, ...]]:
        """Output (H, W) and padding (left, right, top, bottom), TF rules: an odd pixel goes after."""
        if padding not in ("valid", "same"):
            raise self.fail(f"padding must be 'valid' or 'same', got {padding!r}")
        if padding == "valid" and (self.shape[0] < k[0] or self.shape[1] < k[1]):
            raise self.fail(f"with a {k[0]}x{k[1]} window needs at least {k[0]}x{k[1]} pixels but gets "
                            f"{self.got()}; use padding='same' or fewer pooling/conv layers")
        if padding == "valid":
            return ((self.shape[0] - k[0]) // s[0] + 1, (self.shape[1] - k[1]) // s[1] + 1), (0, 0, 0, 0)
        out = (-(-self.shape[0] // s[0]), -(-self.shape[1] // s[1]))
        total = [max((o - 1) * st + kk - n, 0) for o, st, kk, n in zip(out, s, k, self.shape)]
        return out, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)

    def weights(self, op: nn.Module, kernel_init, bias_init, kernel_reg, bias_reg) -> None:
        self.kernel = self.name
        with torch.no_grad():
            _lookup(kernel_init, INITIALIZERS, "kernel_initializer", self.kind)(op.weight)
            if op.bias is not None:
                _lookup(bias_init, INITIALIZERS, "bias_initializer", self.kind)(op.bias)
        for attr, reg, what in (("weight", kernel_reg, "kernel_regularizer"), ("bias", bias_reg, "bias_regularizer")):
            if reg is not None and getattr(op, attr) is not None:
                self.penalties.append((self.name, attr, _lookup(reg, REGULARIZERS, what, self.kind)))

    def act(self, activation: str | None, own: bool = False) -> None:
        self.activation = "linear" if activation is None else activation
        if self.activation not in ACTIVATIONS:
            raise self.fail(f"got unknown activation {activation!r}; {did_you_mean(str(activation), ACTIVATIONS)}")
        if self.activation != "linear":
            self.add(ACTIVATIONS[self.activation](), "" if own else f"_{self.activation}")

    def ints(self, value: Any, what: str, n: int = 1) -> Any:
        """A positive int, or (n=2) an int or pair of ints like (3, 3)."""
        values = value if n == 2 and isinstance(value, tuple) and len(value) == 2 else (value,) * n
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise self.fail(f"{what} must be a positive whole number{' or a pair like (3, 3)' * (n == 2)}, got {value!r}")
        return values if n == 2 else values[0]

    def fraction(self, value: Any, what: str, top: float = 1.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
            raise self.fail(f"{what} must be a number " + (f"in [0, {top:g}]" if top < math.inf else ">= 0")
                            + f", got {value!r}")
        return float(value)


def dense(c: _Ctx, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
          bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None) -> Shape:
    units = c.ints(units, "units")
    op = c.add(Linear(c.features(), units, bias=bool(use_bias), device=c.device))
    c.weights(op, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer)
    c.act(activation)
    return (units,)


def conv2d(c: _Ctx, filters, kernel_size, strides=(1, 1), padding="valid", activation=None, use_bias=True,
           kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
           bias_regularizer=None) -> Shape:
    filters, k, s = c.ints(filters, "filters"), c.ints(kernel_size, "kernel_size", 2), c.ints(strides, "strides", 2)
    c.image()
    (h, w), pad = c.window(k, s, padding)
    even = pad[0::2] == pad[1::2]   # pad: (left, right, top, bottom)
    if not even:
        c.add(nn.ZeroPad2d(pad), "_pad")
    op = c.add(nn.Conv2d(c.shape[2], filters, k, s, padding=pad[2::-2] if even else 0, bias=bool(use_bias),
                         device=c.device))
    c.weights(op, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer)
    c.act(activation)
    return (h, w, filters)


def _pooling(kind: str) -> Callable:
    def pooling(c: _Ctx, pool_size=(2, 2), strides=None, padding="valid") -> Shape:
        k = c.ints(pool_size, "pool_size", 2)
        s = k if strides is None else c.ints(strides, "strides", 2)
        c.image()
        (h, w), pad = c.window(k, s, padding)
        even, top_left = pad[0::2] == pad[1::2], pad[2::-2]
        if kind == "max":
            if not even:   # TF ignores padded pixels; -inf is never the max
                c.add(nn.ConstantPad2d(pad, float("-inf")), "_pad")
            c.add(nn.MaxPool2d(k, s, padding=top_left if even else 0))
        else:
            c.add(nn.AvgPool2d(k, s, top_left, count_include_pad=False) if even else AvgPoolSame(k, s, pad))
        return (h, w, c.shape[2])
    return pooling


def batch_normalization(c: _Ctx, axis=-1, momentum=0.99, epsilon=1e-3) -> Shape:
    if axis not in (-1, len(c.shape)):
        raise c.fail(f"normalizes the last (channel) axis; got axis={axis!r}, use axis=-1")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
        raise c.fail(f"epsilon must be a number > 0, got {epsilon!r}")
    norm = nn.BatchNorm2d if len(c.shape) == 3 else nn.BatchNorm1d   # channels: Keras' last axis
    # Keras' momentum is the weight of the old moving average (0.99); torch's that of the new batch (0.01)
    c.add(norm(c.shape[-1], eps=epsilon, momentum=1.0 - c.fraction(momentum, "momentum"), device=c.device))
    return c.shape


def dropout(c: _Ctx, rate, noise_shape=None, seed=None) -> Shape:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise c.fail(f"rate is the fraction dropped and must be in [0, 1), got {rate!r}")
    if noise_shape is not None:
        raise c.fail("noise_shape is not supported; leave it out")
    c.add(Dropout(float(rate)))
    return c.shape


def flatten(c: _Ctx) -> Shape:
    c.add(Flatten())
    return (math.prod(c.shape),)


def gaussian_noise(c: _Ctx, stddev) -> Shape:
    c.add(GaussianNoise(c.fraction(stddev, "stddev", math.inf)))
    return c.shape


def activation(c: _Ctx, activation) -> Shape:
    c.act(activation, own=True)
    return c.shape


LAYERS = Registry("layer", LayerError)
for _name, _builder, _aliases in (
        ("Dense", dense, ()), ("Conv2D", conv2d, ("Convolution2D",)),
        ("MaxPooling2D", _pooling("max"), ("MaxPool2D",)), ("AveragePooling2D", _pooling("avg"), ("AvgPool2D",)),
        ("BatchNormalization", batch_normalization, ()), ("Dropout", dropout, ()), ("Flatten", flatten, ()),
        ("GaussianNoise", gaussian_noise, ()), ("Activation", activation, ())):
    LAYERS.register(_name, _builder, aliases=_aliases)
for _name, _builder in PREPROCESSING_BUILDERS.items():   # Rescaling, Normalization, Random* (preprocessing.py)
    LAYERS.register(_name, _builder)
_IMAGE_LAYERS = {"Conv2D", "MaxPooling2D", "AveragePooling2D"} | IMAGE_ONLY
_INPUT_KWARGS = ("input_shape", "input_dim")   # read from the first layer only, like Keras


def input_kind(calls: Sequence[Call]) -> str:
    """'image' if a Conv2D, pooling or augmentation layer comes before the first Flatten, else 'flat'."""
    for kind in (LAYERS.key(c.name) or c.name for c in calls):
        if kind in _IMAGE_LAYERS or kind == "Flatten":
            return "image" if kind in _IMAGE_LAYERS else "flat"
    return "flat"


def input_shape(calls: Sequence[Call]) -> Shape:
    """One example as the data tensor holds it: (1, 28, 28) for image models, (784,) for flat ones."""
    return (1, 28, 28) if input_kind(calls) == "image" else (784,)


def _input_shape(calls: Sequence[Call], given: Shape | None) -> Shape:
    """Keras-layout input: the first layer's declared input_shape, else the data's ``given`` shape.

    ``given`` is one example as the data tensor holds it, (784,) or (C, H, W); None means MNIST.
    A flat model takes it flat; an image model takes (C, H, W) as (H, W, C) and n*n values as (n, n, 1).
    """
    kind, kw = input_kind(calls), calls[0].kw()
    given = tuple(given) if given is not None else input_shape(calls)
    values, side = math.prod(given), math.isqrt(math.prod(given))
    declared = kw.get("input_shape", (kw["input_dim"],) if "input_dim" in kw else None)
    if declared is not None:
        declared = tuple(declared) if isinstance(declared, (tuple, list)) else (declared,)
        if not declared or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in declared):
            raise LayerError(f"input_shape must be whole numbers like (784,) or (28, 28, 1), got {declared!r}", 0)
        if math.prod(declared) != values:
            raise LayerError(f"{calls[0].name} declares input_shape={declared} but each example has {values} "
                             f"values {given}; drop input_shape or fix it", 0)
        return declared
    if kind == "flat":
        return (values,)
    if len(given) == 3:
        return (given[1], given[2], given[0])
    return (side, side, 1) if len(given) == 1 and side * side == values else given


@dataclass(frozen=True)
class LayerInfo:
    """One Keras layer of a built model: plain data for summaries, plots and penalties."""
    name: str                            # 'dense_1'
    type: str                            # 'Dense'
    call: Call
    output_shape: Shape                  # Keras layout, no batch axis
    params: int                          # as Keras counts: trainable + non-trainable
    non_trainable: int                   # BatchNorm moving statistics, adapted Normalization
    kernel: str | None                   # torch submodule holding the kernel ('.weight')
    penalties: tuple[tuple[str, str, Penalty], ...]
    activation: str


class Sequential(nn.Module):
    """A built model: torch submodules in order, named like Keras layers (dense_1, conv2d_2, ...).

    ``dense_1`` is the nn.Linear, ``dense_1_relu`` its activation; ``.layers`` holds one
    :class:`LayerInfo` per Keras layer. ``input_shape`` is Keras layout, ``torch_input_shape`` NCHW.
    """

    def __init__(self, layers: Sequence[LayerInfo], modules: Sequence[tuple[str, nn.Module]],
                 input_shape: Shape, output_activation: str):
        super().__init__()
        for name, module in modules:
            self.add_module(name, module)
        self.layers, self.input_shape, self.output_activation = tuple(layers), tuple(input_shape), output_activation
        hwc = self.input_shape
        self.torch_input_shape = (hwc[2], hwc[0], hwc[1]) if len(hwc) == 3 else hwc   # (1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 784) or (N, 1, 28, 28) -> (N, 10): logits if output_activation == 'softmax', else outputs."""
        x = x.reshape(x.shape[0], *self.torch_input_shape)
        for module in self._modules.values():
            x = module(x)
        return x

    def regularization_loss(self) -> torch.Tensor:
        """Sum of kernel/bias penalties, 0-dim. Reads weights by attribute, so functional_call works."""
        terms = [p(getattr(getattr(self, m), attr)) for info in self.layers for m, attr, p in info.penalties]
        if terms:
            return sum(terms[1:], terms[0])
        first = next(self.parameters(), None)
        return torch.zeros((), device=None if first is None else first.device)

    def summary_rows(self) -> list[tuple[str, str, tuple, int]]:
        """[(name, type, output shape like (None, 28, 28, 16), params)], one per Keras layer."""
        return [(i.name, i.type, (None, *i.output_shape), i.params) for i in self.layers]

    def count_params(self) -> tuple[int, int, int]:
        """(total, trainable, non-trainable) as Keras counts them."""
        total, frozen = sum(i.params for i in self.layers), sum(i.non_trainable for i in self.layers)
        return total, total - frozen, frozen

    def summary(self) -> str:
        """Keras 2's ``model.summary()`` text, column for column."""
        rule, rows = "_" * 65, self.summary_rows()
        lines = [rule, _row("Layer (type)", "Output Shape", "Param #"), "=" * 65]
        for n, (name, kind, shape, params) in enumerate(rows):
            lines += [_row(f"{name} ({kind})", str(shape), str(params)), "=" * 65 if n == len(rows) - 1 else rule]
        total, trainable, frozen = self.count_params()
        return "\n".join(lines + [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                                  f"Non-trainable params: {frozen:,}", rule])

    def kernels(self) -> dict[str, torch.Tensor]:
        """Layer name -> kernel, detached, torch layout (out, in) or (out, in, kh, kw)."""
        return {i.name: getattr(self, i.kernel).weight.detach() for i in self.layers if i.kernel}


def _row(*fields: str, positions=(29, 55, 65)) -> str:  # Keras' print_row: cut each field, end it with a space
    line = ""
    for i, text in enumerate(fields):
        line = ((line[:-1] + " ") if i else "") + text
        line = line[: positions[i]].ljust(positions[i])
    return line


def build_model(calls: Sequence[Call], input_shape: Shape | None = None, *, num_classes: int = 10,
                device: Any = None) -> Sequential:
    """Build ``calls`` into a :class:`Sequential`, or raise :class:`LayerError` naming the layer.

    ``input_shape``: one example as the data tensor holds it, e.g. ``x_train.shape[1:]``: (784,) or
    (1, 28, 28); None: MNIST. A first layer's declared Keras ``input_shape=(28, 28, 1)`` wins if it
    holds as many values. ``model.input_shape`` is then Keras layout, ``model.torch_input_shape``
    the (C, H, W) or (n,) that forward() reshapes batches to. Seed torch beforehand.
    """
    calls = list(calls)
    if not calls:
        raise LayerError(f"the model has no layers; end it with Dense({num_classes}, activation='softmax')")
    shape, counts, built = _input_shape(calls, input_shape), {}, []
    for index, call in enumerate(calls):
        kind = LAYERS.key(call.name)
        if kind is None:
            raise LayerError(f"unknown layer {call.name!r}; {did_you_mean(call.name, LAYERS)}", index)
        counts[kind] = counts.get(kind, 0) + 1   # Keras' naming: MaxPooling2D -> max_pooling2d_1
        snake = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", kind)).lower()
        name = call.kw().get("name", f"{snake}_{counts[kind]}")
        if not isinstance(name, str) or not name.isidentifier() or hasattr(Sequential, name) \
                or name in ("layers", "input_shape", "torch_input_shape", "output_activation", "training") \
                or any(name == b.name for b in built):
            raise LayerError(f"name={name!r} must be a new identifier like 'hidden_1'", index)
        ctx = _Ctx(name, kind, built[-1].out if built else shape, built[-1] if built else None, device)
        kwargs = tuple((k, v) for k, v in call.kwargs if k not in _INPUT_KWARGS + ("name",))
        try:
            ctx.out = LAYERS.build(Call(kind, call.args, kwargs), ctx)
        except LayerError as e:
            raise LayerError(e.message, index, name) from None
        built.append(ctx)
    last, out = built[-1], built[-1].out
    if len(out) != 1:
        raise LayerError(f"the model's output is still an image {(None, *out)}; end it with Flatten() and "
                         f"Dense({num_classes}, activation='softmax')", len(built) - 1, last.name)
    if out[0] != num_classes:
        raise LayerError(f"the last layer outputs {out[0]} values; a {num_classes}-class dataset needs "
                         f"Dense({num_classes}, activation='softmax') last", len(built) - 1, last.name)
    if last.activation == "softmax":   # left to the loss, as a stable log-softmax
        last.modules.pop()
    infos = [_info(c, call) for c, call in zip(built, calls)]
    return Sequential(infos, [m for c in built for m in c.modules], shape, last.activation)


def _info(c: _Ctx, call: Call) -> LayerInfo:
    params = sum(p.numel() for _, m in c.modules for p in m.parameters())
    stats = sum(b.numel() for _, m in c.modules for n, b in m.named_buffers() if n in ("running_mean", "running_var"))
    stats += sum(getattr(m, "keras_weights", 0) for _, m in c.modules)   # an adapted Normalization's
    return LayerInfo(c.name, c.kind, call, c.out, params + stats, stats, c.kernel, tuple(c.penalties), c.activation)


def check_model(calls: Sequence[Call], input_shape: Shape | None = None, *, num_classes: int = 10) -> Sequential:
    """The model on torch's 'meta' device (no memory), or :class:`LayerError` if it cannot be built."""
    return build_model(calls, input_shape, num_classes=num_classes, device="meta")
