"""Learning-rate schedules by their ``keras.optimizers.schedules`` names, written inside the optimizer
call and evaluated at the optimizer's step count, as Keras does (the first update uses step 0)::

    optimizer = "Adadelta(learning_rate=ExponentialDecay(1.0, decay_steps=938, decay_rate=0.7, staircase=True))"

>>> lr = learning_rate(parse_call("SGD(learning_rate=CosineDecay(0.1, 1000))").kw()["learning_rate"])
>>> lr.at(0), lr.at(500), lr.at(1000)
(0.1, 0.05, 0.0)

Each schedule is a frozen dataclass whose fields are Keras' arguments with Keras' defaults (the
binder in ``registry.py`` checks a call against them) and whose ``__call__(step)`` is Keras' formula
in float64 (Keras computes in float32: the two agree to about 1e-7, relative). No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import OptimizerError
from ..registry import Registry
from ..spec.calls import Call

SCHEDULES = Registry("learning-rate schedule", OptimizerError)


def _number(owner: object, name: str, value: Any, low: float | None = None, strict: bool = False) -> None:
    kind = type(owner).__name__
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptimizerError(f"{kind} {name} must be a number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise OptimizerError(f"{kind} {name} must be {'>' if strict else '>='} {low}, got {value!r}")


def _flag(owner: object, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise OptimizerError(f"{type(owner).__name__} {name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class _Decay:
    """What ExponentialDecay and InverseTimeDecay share: their arguments and their checks."""

    initial_learning_rate: float
    decay_steps: int
    decay_rate: float
    staircase: bool = False

    def __post_init__(self) -> None:
        _number(self, "initial_learning_rate", self.initial_learning_rate, 0)
        _number(self, "decay_steps", self.decay_steps, 0, strict=True)
        _number(self, "decay_rate", self.decay_rate, 0)
        _flag(self, "staircase", self.staircase)

    def progress(self, step: int) -> float:
        """``step / decay_steps``, floored if ``staircase``."""
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p


@SCHEDULES.register("ExponentialDecay")
@dataclass(frozen=True)
class ExponentialDecay(_Decay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; the exponent floored if ``staircase``."""

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.decay_rate ** self.progress(step)


@SCHEDULES.register("PiecewiseConstantDecay")
@dataclass(frozen=True)
class PiecewiseConstantDecay:
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while ``boundaries[i-1] < step <=
    boundaries[i]``, ``values[-1]`` after the last boundary."""

    boundaries: tuple
    values: tuple

    def __post_init__(self) -> None:
        if not isinstance(self.boundaries, tuple) or not isinstance(self.values, tuple):
            raise OptimizerError("PiecewiseConstantDecay boundaries and values must be lists, "
                                 "e.g. PiecewiseConstantDecay([1000, 2000], [0.1, 0.01, 0.001])")
        if not self.boundaries or len(self.boundaries) != len(self.values) - 1:
            raise OptimizerError(f"PiecewiseConstantDecay needs one value more than boundaries (at least one "
                                 f"boundary), got {len(self.boundaries)} boundaries and {len(self.values)} values")
        for name, items in (("boundaries", self.boundaries), ("values", self.values)):
            for item in items:
                _number(self, name, item, 0)
        if any(a >= b for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise OptimizerError(f"PiecewiseConstantDecay boundaries must increase strictly, got {list(self.boundaries)}")

    def __call__(self, step: int) -> float:
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return float(value)
        return float(self.values[-1])


@SCHEDULES.register("InverseTimeDecay")
@dataclass(frozen=True)
class InverseTimeDecay(_Decay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``; the ratio floored if ``staircase``."""

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate / (1 + self.decay_rate * self.progress(step))


@SCHEDULES.register("PolynomialDecay")
@dataclass(frozen=True)
class PolynomialDecay:
    """``(initial - end) * (1 - step / decay_steps) ** power + end``, the step held at ``decay_steps``;
    with ``cycle`` the horizon is the first multiple of ``decay_steps`` at or above the step instead."""

    initial_learning_rate: float
    decay_steps: int
    end_learning_rate: float = 0.0001
    power: float = 1.0
    cycle: bool = False

    def __post_init__(self) -> None:
        _number(self, "initial_learning_rate", self.initial_learning_rate, 0)
        _number(self, "decay_steps", self.decay_steps, 0, strict=True)
        _number(self, "end_learning_rate", self.end_learning_rate, 0)
        _number(self, "power", self.power)
        _flag(self, "cycle", self.cycle)

    def __call__(self, step: int) -> float:
        horizon = self.decay_steps
        if self.cycle:
            horizon *= 1 if step == 0 else math.ceil(step / self.decay_steps)
        else:
            step = min(step, self.decay_steps)
        p = step / horizon
        return (self.initial_learning_rate - self.end_learning_rate) * (1 - p) ** self.power + self.end_learning_rate


@SCHEDULES.register("CosineDecay")
@dataclass(frozen=True)
class CosineDecay:
    """Optionally a linear warmup from ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``,
    then ``lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * t / decay_steps)) + alpha)`` with ``t`` held at
    ``decay_steps``; ``lr0`` is ``warmup_target``, or ``initial_learning_rate`` without warmup."""

    initial_learning_rate: float
    decay_steps: int
    alpha: float = 0.0
    warmup_target: float | None = None
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _number(self, "initial_learning_rate", self.initial_learning_rate, 0)
        _number(self, "decay_steps", self.decay_steps, 0, strict=True)
        _number(self, "alpha", self.alpha, 0)
        _number(self, "warmup_steps", self.warmup_steps, 0)
        if self.warmup_target is not None:
            _number(self, "warmup_target", self.warmup_target, 0)

    def _decay(self, step: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * fraction + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)


@SCHEDULES.register("CosineDecayRestarts")
@dataclass(frozen=True)
class CosineDecayRestarts:
    """SGDR: a cosine from 1 to ``alpha`` over ``first_decay_steps``, then restarts, each period ``t_mul``
    times longer and starting ``m_mul`` times lower; times ``initial_learning_rate``."""

    initial_learning_rate: float
    first_decay_steps: int
    t_mul: float = 2.0
    m_mul: float = 1.0
    alpha: float = 0.0

    def __post_init__(self) -> None:
        _number(self, "initial_learning_rate", self.initial_learning_rate, 0)
        _number(self, "first_decay_steps", self.first_decay_steps, 0, strict=True)
        _number(self, "t_mul", self.t_mul, 0, strict=True)
        _number(self, "m_mul", self.m_mul, 0)
        _number(self, "alpha", self.alpha, 0)

    def __call__(self, step: int) -> float:
        fraction = step / self.first_decay_steps
        if self.t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:  # periods grow geometrically: find the restart whose span holds the step
            restart = math.floor(math.log(1.0 - fraction * (1.0 - self.t_mul)) / math.log(self.t_mul))
            done = (1.0 - self.t_mul ** restart) / (1.0 - self.t_mul)
            fraction = (fraction - done) / self.t_mul ** restart
        cosine = 0.5 * self.m_mul ** restart * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)


def build_schedule(call: Call) -> Any:
    """The schedule a call names: ``build_schedule(parse_call("ExponentialDecay(0.1, 100, 0.9)"))``."""
    return SCHEDULES.build(call)


class LearningRate:
    """The learning rate at each optimizer step: a schedule of the step count, or a constant that
    ReduceLROnPlateau may lower (Keras refuses to set the learning rate of a scheduled optimizer).

    >>> rate = LearningRate(0.1); rate.at(5)
    0.1
    """

    def __init__(self, value: float | Call | Any):
        self.schedule = build_schedule(value) if isinstance(value, Call) else (value if callable(value) else None)
        self.constant = None if self.schedule is not None else float(value)

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None

    def at(self, step: int) -> float:
        return self.schedule(step) if self.schedule is not None else self.constant

    def set(self, value: float) -> None:
        if self.schedule is not None:
            raise OptimizerError("the learning rate follows a schedule and cannot be set")
        self.constant = float(value)
