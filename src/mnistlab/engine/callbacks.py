"""Training callbacks by their ``keras.callbacks`` names, with Keras 3's defaults and semantics::

    [train]
    callbacks = ["EarlyStopping(monitor='val_loss', patience=3, restore_best_weights=True)",
                 "ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=2)"]

>>> training = Training(build_callbacks(spec.callbacks), LearningRate(0.1), weights=model_weights)
>>> training.epoch_end(epoch=0, logs={"loss": 0.3, "val_loss": 0.2})   # after each epoch, 0-based
>>> training.stop_training, training.lr.at(step)
>>> best = training.train_end()                # weights to restore (restore_best_weights), or None

A callback acts on :class:`Training` as a Keras callback acts on its model: it reads the epoch's logs,
lowers the learning rate, asks to stop, keeps the best weights. Its whole state (counters, best
value, best weights) goes into the run's checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import StudyError
from ..registry import Registry
from ..spec.calls import parse_call
from .schedules import LearningRate

CALLBACKS = Registry("callback", StudyError)
MODES = ("auto", "min", "max")
Weights = dict[str, Any]  # a model's state_dict, copied


def _check(owner: object, name: str, value: Any, kind: type | tuple, low: float | None = None) -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool) and (not isinstance(value, float) or math.isfinite(value))
    if not ok or (low is not None and value < low):
        want = {int: "a whole number", bool: "True or False", str: "a string"}.get(kind, "a number")
        bound = f" >= {low}" if low is not None else ""
        raise StudyError(f"{type(owner).__name__} {name} must be {want}{bound}, got {value!r}")


class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs (after
    ``start_from_epoch``); with ``restore_best_weights`` the run ends with its best epoch's weights
    (Keras 3: whether or not it stopped early)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        _check(self, "monitor", monitor, str)
        _check(self, "min_delta", min_delta, (int, float))
        _check(self, "patience", patience, int, 0)
        _check(self, "start_from_epoch", start_from_epoch, int, 0)
        if mode not in MODES:
            raise StudyError(f"EarlyStopping mode must be one of {', '.join(MODES)}, got {mode!r}")
        if baseline is not None:
            _check(self, "baseline", baseline, (int, float))
        if not isinstance(restore_best_weights, bool):
            raise StudyError(f"EarlyStopping restore_best_weights must be True or False, got {restore_best_weights!r}")
        self.monitor, self.patience, self.baseline = monitor, patience, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        lower = mode == "min" or (mode == "auto" and monitor.removeprefix("val_") == "loss")
        self.sign = -1.0 if lower else 1.0  # improvement: sign * (current - min_delta * sign) > sign * best
        self.min_delta = abs(min_delta) * self.sign
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = -self.sign * math.inf
        self.best_weights: Weights | None = None

    def _improves(self, value: float, reference: float) -> bool:
        return self.sign * (value - self.min_delta) > self.sign * reference

    def on_epoch_end(self, epoch: int, logs: dict[str, float], training: "Training") -> None:
        current = logs.get(self.monitor)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = training.weights(), epoch
        self.wait += 1
        if self._improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = training.weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            training.stop(epoch, f"EarlyStopping: {self.monitor} did not improve on {self.best:.6g} "
                                 f"(epoch {self.best_epoch + 1}) for {self.wait} epochs")

    def on_train_end(self, training: "Training") -> Weights | None:
        if self.restore_best_weights and self.best_weights is not None:
            training.restored_epoch = self.best_epoch + 1
            return self.best_weights
        return None

    def state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    def load(self, state: dict[str, Any], weights: Weights | None) -> None:
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        self.stopped_epoch, self.best_weights = state["stopped_epoch"], weights


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` (not below ``min_lr``) when ``monitor`` has not improved
    by more than ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        _check(self, "monitor", monitor, str)
        _check(self, "factor", factor, (int, float), 0)
        if not 0 < factor < 1:
            raise StudyError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor!r}")
        _check(self, "patience", patience, int, 0)
        _check(self, "min_delta", min_delta, (int, float))
        _check(self, "cooldown", cooldown, int, 0)
        _check(self, "min_lr", min_lr, (int, float), 0)
        if mode not in MODES:
            raise StudyError(f"ReduceLROnPlateau mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.monitor, self.factor, self.patience, self.min_delta = monitor, factor, patience, min_delta
        self.cooldown, self.min_lr = cooldown, min_lr
        self.sign = -1.0 if mode == "min" or (mode == "auto" and "acc" not in monitor) else 1.0
        self.best, self.wait, self.cooldown_counter = -self.sign * math.inf, 0, 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float], training: "Training") -> None:
        current = logs.get(self.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.sign * current > self.sign * (self.best + self.sign * self.min_delta):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(np.float32(training.lr.at(0)))  # Keras reads its float32 variable
                if old > np.float32(self.min_lr):
                    training.lr.set(max(old * self.factor, self.min_lr))
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def on_train_end(self, training: "Training") -> Weights | None:
        return None

    def state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "cooldown_counter": self.cooldown_counter}

    def load(self, state: dict[str, Any], weights: Weights | None) -> None:
        self.wait, self.best, self.cooldown_counter = state["wait"], state["best"], state["cooldown_counter"]


CALLBACKS.register("EarlyStopping", EarlyStopping)
CALLBACKS.register("ReduceLROnPlateau", ReduceLROnPlateau)


def build_callbacks(texts: Iterable[str]) -> list[Any]:
    """Callback objects for call texts: ``build_callbacks(["EarlyStopping(patience=2)"])``."""
    return [CALLBACKS.build(parse_call(text, bare_name_ok=True)) for text in texts]


def monitors(validation: Any) -> tuple[str, ...]:
    """The metrics a run logs each epoch, which callbacks may monitor."""
    return ("loss", "accuracy") + (() if validation == "none" else ("val_loss", "val_accuracy"))


class Training:
    """What callbacks act on: the learning rate, the stop flag, the model's weights (a copy on request)."""

    def __init__(self, callbacks: list[Any], lr: LearningRate, weights: Callable[[], Weights]):
        self.callbacks, self.lr, self.weights = callbacks, lr, weights
        self.stop_training = False
        self.stopped_epoch: int | None = None  # 1-based, as tables show epochs
        self.reason: str | None = None
        self.restored_epoch: int | None = None

    def stop(self, epoch: int, reason: str) -> None:
        self.stop_training, self.stopped_epoch, self.reason = True, epoch + 1, reason

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs, self)

    def train_end(self) -> Weights | None:
        """The weights the run keeps if a callback restores others (the last one that does wins)."""
        restored = None
        for callback in self.callbacks:
            restored = callback.on_train_end(self) or restored
        return restored

    def record(self) -> dict[str, Any] | None:
        """What a run stores about its ending: ``{"stopped_epoch": 7, "reason": ..., "restored_epoch": 4}``."""
        if self.stopped_epoch is None and self.restored_epoch is None:
            return None
        return {"stopped_epoch": self.stopped_epoch, "reason": self.reason, "restored_epoch": self.restored_epoch}

    def state(self) -> tuple[dict[str, Any], dict[str, Weights]]:
        """(JSON-able state, best weights by callback index) for a checkpoint."""
        state = {"lr": self.lr.constant, "stopped_epoch": self.stopped_epoch, "reason": self.reason,
                 "callbacks": [c.state() for c in self.callbacks]}
        weights = {str(i): c.best_weights for i, c in enumerate(self.callbacks) if getattr(c, "best_weights", None)}
        return state, weights

    def load(self, state: dict[str, Any], weights: dict[str, Weights]) -> None:
        if state.get("lr") is not None:
            self.lr.set(state["lr"])
        self.stopped_epoch, self.reason = state.get("stopped_epoch"), state.get("reason")
        self.stop_training = self.stopped_epoch is not None
        for i, (callback, saved) in enumerate(zip(self.callbacks, state.get("callbacks", []))):
            callback.load(saved, weights.get(str(i)))
