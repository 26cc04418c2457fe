"""Optimizers by their Keras 2 names and Keras 2 defaults, built as torch optimizers.

    >>> call = parse_call("SGD(lr=0.1, momentum=0.9, nesterov=True)", bare_name_ok=True)
    >>> opt = build_optimizer(call, model.parameters())          # torch.optim.SGD, fused on CPU/CUDA
    >>> optimizer_defaults(Call("adadelta"))                      # for display and run hashing
    {'name': 'adadelta', 'learning_rate': 1.0, 'rho': 0.95, 'epsilon': 1e-07}

The seed notebooks ran standalone Keras 2.3 ("Using TensorFlow backend."), whose defaults differ
from torch's and from tf.keras': Adam's epsilon is 1e-7 (torch: 1e-8), Adadelta's learning rate
1.0 (tf.keras: 0.001), Adagrad's accumulators start at 0 (tf.keras: 0.1). Each builder below is a
function with Keras' signature that returns (torch class, torch arguments); the update rules match
Keras' except where a comment says otherwise.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Iterable

import torch

from ..errors import OptimizerError
from ..registry import Registry
from ..spec.calls import Call
from .schedules import LearningRate, build_schedule


def adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    # Keras applies epsilon before bias correction ("epsilon hat"), torch after: they differ only
    # while sqrt(v) is near epsilon (about 1e-7), i.e. not in practice.
    return torch.optim.Adam, dict(lr=learning_rate, betas=(beta_1, beta_2), eps=epsilon, amsgrad=amsgrad)


def sgd(learning_rate=0.01, momentum=0.0, nesterov=False):
    # Keras' v = m*v - lr*g; p += v equals torch's b = m*b + g; p -= lr*b for a constant lr.
    # Keras accepts nesterov without momentum (a no-op); torch refuses it.
    return torch.optim.SGD, dict(lr=learning_rate, momentum=momentum, nesterov=bool(nesterov and momentum))


def rmsprop(learning_rate=0.001, rho=0.9, epsilon=1e-7, momentum=0.0, centered=False):
    # momentum and centered are tf.keras' additions; standalone Keras 2 has neither (both off).
    return torch.optim.RMSprop, dict(lr=learning_rate, alpha=rho, eps=epsilon, momentum=momentum, centered=centered)


def adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7):
    return torch.optim.Adadelta, dict(lr=learning_rate, rho=rho, eps=epsilon)


def adagrad(learning_rate=0.01, epsilon=1e-7, initial_accumulator_value=0.0):
    # Keras 2.2/2.3 start the accumulators at K.zeros; 0.1 is tf.keras'. Same update: g / (sqrt(a) + eps).
    return torch.optim.Adagrad, dict(lr=learning_rate, eps=epsilon, initial_accumulator_value=initial_accumulator_value)


def adamax(learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    # torch adds epsilon inside the max(beta_2 * u, |g| + eps); Keras after it: a 1e-7 difference.
    return torch.optim.Adamax, dict(lr=learning_rate, betas=(beta_1, beta_2), eps=epsilon)


def nadam(learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-7, schedule_decay=0.004):
    # torch's momentum_decay is Keras' schedule_decay: mu_t = beta_1 * (1 - 0.5 * 0.96 ** (t * decay)).
    return torch.optim.NAdam, dict(lr=learning_rate, betas=(beta_1, beta_2), eps=epsilon, momentum_decay=schedule_decay)


OPTIMIZERS = Registry("optimizer", OptimizerError, folded=True)  # SGD, sgd: Keras' names fold case
for _builder in (adam, sgd, rmsprop, adadelta, adagrad, adamax, nadam):
    OPTIMIZERS.register(_builder.__name__, _builder)


def _resolve(call: Call) -> tuple[str, dict[str, Any]]:
    """(registry key, every Keras argument with its default), validated."""
    key = OPTIMIZERS.lookup(call.name)
    kwargs = tuple((k, v) for k, v in call.kwargs if not (k == "decay" and v == 0))  # Keras 2's default: none
    for name, value in kwargs:
        if name == "decay":
            raise OptimizerError(f"{key} decay={value!r} (Keras 2 time-based learning-rate decay) is not "
                                 f"supported; leave decay out")
    given = OPTIMIZERS.defaults(Call(key, call.args, kwargs))
    params = inspect.signature(OPTIMIZERS[key]).parameters
    return key, {name: _checked(key, name, value, params[name].default) for name, value in given.items()}


def _checked(key: str, name: str, value: Any, default: Any) -> Any:
    if name == "learning_rate" and isinstance(value, Call):  # a schedule: kept as its call, checked here
        build_schedule(value)
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise OptimizerError(f"{key} {name} must be True or False, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise OptimizerError(f"{key} {name} must be a number >= 0, got {value!r}")
    if name == "learning_rate" and value == 0:
        raise OptimizerError(f"{key} learning_rate must be > 0, got {value!r}")
    if name.startswith(("beta_", "rho")) and value >= 1:
        raise OptimizerError(f"{key} {name} must be in [0, 1), got {value!r}")
    return float(value)   # 1 and 1.0 hash alike


def optimizer_defaults(call: Call) -> dict[str, Any]:
    """Keras-named arguments with defaults filled in: ``{'name': 'adam', 'learning_rate': 0.001, ...}``
    (a schedule's learning_rate stays its :class:`Call`: ``learning_rate(...)`` evaluates it)."""
    key, args = _resolve(call)
    return {"name": key, **args}


def learning_rate(call: Call) -> LearningRate:
    """The optimizer's learning rate as a function of the step: ``learning_rate(call).at(step)``."""
    return LearningRate(optimizer_defaults(call)["learning_rate"])


def _tensors(params: list) -> list[torch.Tensor]:
    return [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]


def build_optimizer(call: Call, params: Iterable, fused: bool | None = None) -> torch.optim.Optimizer:
    """A torch optimizer for ``call`` (``Call('adam')``, ``SGD(lr=0.1)``), name case-insensitive.

    ``fused``: None uses torch's fused kernels where the optimizer has them (Adam, SGD, Adagrad) and
    the parameters are float tensors on CPU or CUDA (3-9x faster steps on CPU than the default);
    True asks for them and falls back quietly where there are none; False never uses them.
    """
    key, args = _resolve(call)
    args["learning_rate"] = LearningRate(args["learning_rate"]).at(0)  # a schedule's value is set each step
    cls, kwargs = OPTIMIZERS[key](**args)
    params = list(params)
    tensors = _tensors(params)
    fusable = "fused" in inspect.signature(cls).parameters and bool(tensors) and all(
        t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    if fused is not False and fusable:
        try:
            return cls(params, **kwargs, fused=True)
        except (RuntimeError, ValueError):   # e.g. a dtype or device the fused kernel lacks
            pass
    return cls(params, **kwargs)
