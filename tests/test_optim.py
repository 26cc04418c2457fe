"""optim.py: Keras 2 defaults, names and errors; steps checked against Keras 2.3's update formulas."""

from __future__ import annotations

import pytest
import torch

from mnistlab.spec.calls import Call, parse_call
from mnistlab.engine.optim import OPTIMIZERS, OptimizerError, build_optimizer, optimizer_defaults


def opt_call(text: str) -> Call:
    return parse_call(text, bare_name_ok=True)


KERAS_2_DEFAULTS = {
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.0, "centered": False},
    "adadelta": {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-7},
    "adagrad": {"learning_rate": 0.01, "epsilon": 1e-7, "initial_accumulator_value": 0.0},
    "adamax": {"learning_rate": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "nadam": {"learning_rate": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "schedule_decay": 0.004},
}


@pytest.mark.parametrize("name", sorted(KERAS_2_DEFAULTS))
def test_defaults_are_keras_2(name):
    assert set(OPTIMIZERS) == set(KERAS_2_DEFAULTS)
    assert optimizer_defaults(Call(name)) == {"name": name, **KERAS_2_DEFAULTS[name]}
    opt = build_optimizer(Call(name.upper()), [torch.nn.Parameter(torch.zeros(3))])
    assert opt.param_groups[0]["lr"] == KERAS_2_DEFAULTS[name]["learning_rate"]
    if "epsilon" in KERAS_2_DEFAULTS[name]:
        assert opt.param_groups[0]["eps"] == 1e-7


def test_torch_arguments_carry_the_keras_ones():
    groups = lambda text: build_optimizer(opt_call(text), [torch.nn.Parameter(torch.zeros(2))]).param_groups[0]  # noqa: E731
    adadelta = groups("adadelta")
    assert (adadelta["lr"], adadelta["rho"], adadelta["eps"]) == (1.0, 0.95, 1e-7)
    assert groups("RMSprop(rho=0.8, centered=True)")["alpha"] == 0.8
    assert groups("RMSprop(rho=0.8, centered=True)")["centered"] is True
    assert groups("Nadam(schedule_decay=0.01)")["momentum_decay"] == 0.01
    assert groups("Adam(beta_1=0.8, amsgrad=True)")["betas"] == (0.8, 0.999)
    assert groups("SGD(learning_rate=0.1, momentum=0.9, nesterov=True)")["nesterov"] is True
    assert groups("SGD(nesterov=True)")["nesterov"] is False   # Keras allows it without momentum: a no-op


def test_lr_is_keras_2s_name_for_learning_rate():
    assert optimizer_defaults(opt_call("SGD(lr=0.1)")) == optimizer_defaults(opt_call("SGD(learning_rate=0.1)"))
    assert optimizer_defaults(opt_call("Adam(0.01)"))["learning_rate"] == 0.01          # positional, like Keras
    assert optimizer_defaults(opt_call("SGD(lr=1)"))["learning_rate"] == 1.0            # 1 and 1.0 hash alike
    assert optimizer_defaults(opt_call("SGD(lr=0.1, decay=0.0)")) == optimizer_defaults(opt_call("SGD(lr=0.1)"))
    assert optimizer_defaults(opt_call("SGD(learning_rate=0.1, momentum=0.9, nesterov=True)")) == {
        "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}


@pytest.mark.parametrize("text,message", [
    ("adamm", "unknown optimizer 'adamm'; did you mean 'adam'?"),
    ("Adagard()", "unknown optimizer 'Adagard'; did you mean 'adagrad'?"),
    ("SGD(momentun=0.9)", "sgd got unexpected argument 'momentun'; did you mean 'momentum'?"),
    ("SGD(lr=0.1, learning_rate=0.2)", "sgd got 'learning_rate' twice (lr is another name for learning_rate)"),
    ("Adam(lr='fast')", "adam learning_rate must be a number >= 0, got 'fast'"),
    ("Adam(lr=0)", "adam learning_rate must be > 0, got 0"),
    ("Adam(beta_1=1.5)", "adam beta_1 must be in [0, 1), got 1.5"),
    ("SGD(nesterov=1)", "sgd nesterov must be True or False, got 1"),
    ("SGD(lr=0.1, decay=1e-6)", "sgd decay=1e-06 (Keras 2 time-based learning-rate decay) is not supported"),
    ("SGD(0.1, 0.9, True, 4)", "sgd takes at most 3 positional arguments (learning_rate, momentum, nesterov), got 4"),
])
def test_errors_say_what_was_received_and_what_is_right(text, message):
    with pytest.raises(OptimizerError) as info:
        build_optimizer(opt_call(text), [torch.nn.Parameter(torch.zeros(1))])
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(OptimizerError):
        optimizer_defaults(opt_call(text))


# ---- steps, against Keras 2.3's own update rules (keras/optimizers.py), in float64

P0 = [1.0, -2.0, 0.5]
GRADS = [[1e-6, -0.3, 2.0], [2e-6, 0.1, -1.0], [-1e-6, 0.2, 0.5]]   # the first column makes epsilon matter


def run_torch(text: str, fused=None, steps=len(GRADS)) -> torch.Tensor:
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    opt = build_optimizer(opt_call(text), [p], fused=fused)
    for g in GRADS[:steps]:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach()


def keras_adam(lr, b1=0.9, b2=0.999, eps=1e-7, steps=len(GRADS)):
    p, m, v = torch.tensor(P0, dtype=torch.float64), 0.0, 0.0
    for t, g in enumerate(GRADS[:steps], 1):
        g = torch.tensor(g, dtype=torch.float64)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)   # textbook (torch) placement
    return p


def test_adam_step_uses_epsilon_1e_7():
    ours = run_torch("Adam(learning_rate=0.01)", steps=1)
    assert torch.allclose(ours, keras_adam(0.01, steps=1), rtol=0, atol=1e-12)
    # 1e-6 / (1e-6 + 1e-7): a torch-default epsilon of 1e-8 would move the first weight 8e-4 further
    assert abs(ours[0].item() - (1.0 - 0.01 / 1.1)) < 1e-12
    assert torch.allclose(run_torch("Adam(learning_rate=0.01)"), keras_adam(0.01), rtol=0, atol=1e-12)


def test_fused_and_unfused_steps_agree():
    for text in ("adam", "SGD(lr=0.1, momentum=0.9)", "adagrad"):
        assert torch.allclose(run_torch(text, fused=True), run_torch(text, fused=False), atol=1e-12)
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert build_optimizer(Call("adam"), p).defaults["fused"] is True            # auto: fused on CPU
    assert not build_optimizer(Call("adam"), p, fused=False).defaults["fused"]
    assert "fused" not in build_optimizer(Call("rmsprop"), p, fused=True).defaults  # none there: plain one


def keras_rule(name: str, lr: float):
    """Keras 2.3's update for one optimizer, as a function of (p, g, state) -> p."""
    def sgd_nesterov(p, g, s, m=0.9):
        s["v"] = m * s.get("v", 0.0) - lr * g
        return p + m * s["v"] - lr * g

    def rmsprop(p, g, s, rho=0.9, eps=1e-7):
        s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g * g
        return p - lr * g / (s["a"].sqrt() + eps)

    def adadelta(p, g, s, rho=0.95, eps=1e-7):
        s["a"] = rho * s.get("a", 0.0) + (1 - rho) * g * g
        update = g * (s.get("d", torch.zeros_like(g)) + eps).sqrt() / (s["a"] + eps).sqrt()
        s["d"] = rho * s.get("d", 0.0) + (1 - rho) * update * update
        return p - lr * update

    def adagrad(p, g, s, eps=1e-7):
        s["a"] = s.get("a", 0.0) + g * g          # K.zeros accumulators
        return p - lr * g / (s["a"].sqrt() + eps)
    return {"sgd": sgd_nesterov, "rmsprop": rmsprop, "adadelta": adadelta, "adagrad": adagrad}[name]


@pytest.mark.parametrize("text,name,lr", [
    ("SGD(lr=0.1, momentum=0.9, nesterov=True)", "sgd", 0.1),
    ("RMSprop()", "rmsprop", 0.001),
    ("Adadelta()", "adadelta", 1.0),
    ("Adagrad()", "adagrad", 0.01),
])
def test_steps_follow_keras_2_update_rules(text, name, lr):
    p, state, rule = torch.tensor(P0, dtype=torch.float64), {}, keras_rule(name, lr)
    for g in GRADS:
        p = rule(p, torch.tensor(g, dtype=torch.float64), state)
    assert torch.allclose(run_torch(text), p, rtol=1e-9, atol=1e-12)


def test_builds_from_a_model_and_param_groups():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(Call("adam"), model.parameters())
    assert len(opt.param_groups[0]["params"]) == 2
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.1}]
    assert build_optimizer(Call("sgd"), groups).param_groups[1]["lr"] == 0.1
