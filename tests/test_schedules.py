"""Learning-rate schedules: Keras' formulas, written inside the optimizer call, stepped per batch,
swept through templates, grouped with the same numbers as alone; the pytorch/examples MNIST network."""

import math

import numpy as np
import pytest

from mnistlab.api import load_study
from mnistlab.data import load_tensors
from mnistlab.engine.fit import fit
from mnistlab.engine.group import fit_group, group_key
from mnistlab.engine.optim import learning_rate, optimizer_defaults
from mnistlab.engine.schedules import SCHEDULES, LearningRate
from mnistlab.errors import OptimizerError, StudyError
from mnistlab.spec import Call, RunSpec, expand, parse_call, parse_study

STEPS = [0, 1, 7, 50, 99, 100, 101, 150, 299, 301, 555, 1000, 5000]
MLP = ("Dense(32, activation='relu')", "Dense(10, activation='softmax')")


def rate(text: str) -> LearningRate:
    return learning_rate(parse_call(f"SGD(learning_rate={text})"))


def sgdr(step, lr0, first, t_mul, m_mul, alpha):
    """SGDR by walking the periods one by one (Keras solves for the period with a logarithm)."""
    start, length, i = 0.0, float(first), 0
    while step >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    return lr0 * ((1 - alpha) * 0.5 * m_mul ** i * (1 + np.cos(np.pi * (step - start) / length)) + alpha)


def cosine(step, lr0, decay, alpha=0.0, target=None, warmup=0):
    if target is not None and step < warmup:
        return lr0 + (target - lr0) * step / warmup
    start = lr0 if target is None else target
    t = np.minimum(step - (warmup if target is not None else 0), decay)
    return start * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * t / decay)) + alpha)


REFERENCES = {
    "ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)": lambda s: 0.1 * 0.5 ** (s / 100),
    "ExponentialDecay(1.0, 938, 0.7, staircase=True)": lambda s: 0.7 ** (s // 938),
    "PiecewiseConstantDecay([100, 300], [1.0, 0.5, 0.1])": lambda s: 1.0 if s <= 100 else 0.5 if s <= 300 else 0.1,
    "InverseTimeDecay(0.1, decay_steps=10, decay_rate=0.5)": lambda s: 0.1 / (1 + 0.5 * s / 10),
    "InverseTimeDecay(0.1, 10, 0.5, staircase=True)": lambda s: 0.1 / (1 + 0.5 * (s // 10)),
    "PolynomialDecay(0.1, 1000)": lambda s: (0.1 - 1e-4) * (1 - min(s, 1000) / 1000) + 1e-4,
    "PolynomialDecay(0.1, 300, end_learning_rate=0.01, power=0.5, cycle=True)":
        lambda s: (0.09 * (1 - s / (300 * max(1, math.ceil(s / 300)))) ** 0.5 + 0.01),
    "CosineDecay(0.1, 1000)": lambda s: cosine(s, 0.1, 1000),
    "CosineDecay(0.1, 1000, alpha=0.1)": lambda s: cosine(s, 0.1, 1000, alpha=0.1),
    "CosineDecay(0.0, 900, warmup_target=0.2, warmup_steps=100)": lambda s: cosine(s, 0.0, 900, 0.0, 0.2, 100),
    "CosineDecayRestarts(0.1, 100)": lambda s: sgdr(s, 0.1, 100, 2.0, 1.0, 0.0),
    "CosineDecayRestarts(0.1, 100, t_mul=1.0, m_mul=0.5, alpha=0.05)": lambda s: sgdr(s, 0.1, 100, 1.0, 0.5, 0.05),
    "CosineDecayRestarts(0.1, 100, t_mul=3.0, m_mul=0.8)": lambda s: sgdr(s, 0.1, 100, 3.0, 0.8, 0.0),
}


@pytest.mark.parametrize("text", list(REFERENCES))
def test_learning_rate_at_steps_is_keras_formula(text):
    lr = rate(text)
    assert lr.scheduled
    got = [lr.at(s) for s in STEPS]
    assert got == pytest.approx([float(REFERENCES[text](s)) for s in STEPS], rel=1e-9, abs=1e-12)


def test_every_keras_schedule_is_registered():
    assert set(SCHEDULES) == {"ExponentialDecay", "PiecewiseConstantDecay", "InverseTimeDecay", "PolynomialDecay",
                              "CosineDecay", "CosineDecayRestarts"}


@pytest.mark.parametrize("text, message", [
    ("ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5)", "decay_steps must be > 0"),
    ("PiecewiseConstantDecay([100, 50], [1.0, 0.5, 0.1])", "increase strictly"),
    ("PiecewiseConstantDecay([100], [1.0])", "one value more than boundaries"),
    ("ExpDecay(0.1, 10, 0.5)", "did you mean 'ExponentialDecay'"),
    ("CosineDecay(0.1)", "needs argument 'decay_steps'"),
    ("CosineDecay(0.1, 100, warmup_target='x')", "warmup_target must be a number"),
])
def test_bad_schedules_are_refused(text, message):
    with pytest.raises(OptimizerError, match=message):
        optimizer_defaults(parse_call(f"Adadelta(learning_rate={text})"))


def test_schedule_in_the_optimizer_call_keeps_its_call():
    call = parse_call("Adadelta(learning_rate=ExponentialDecay(1.0, decay_steps=938, decay_rate=0.7, staircase=True))")
    options = optimizer_defaults(call)
    assert isinstance(options["learning_rate"], Call) and options["rho"] == 0.95
    assert learning_rate(call).at(937) == 1.0 and learning_rate(call).at(938 * 3) == pytest.approx(0.7 ** 3)
    assert not learning_rate(parse_call("adam", bare_name_ok=True)).scheduled and learning_rate(parse_call("adam", bare_name_ok=True)).at(10 ** 6) == 0.001


def spec(optimizer, seed=1, epochs=2, callbacks=(), validation="test"):
    return RunSpec(study="t", model="m", layers=MLP, dataset="mnist", epochs=epochs, batch_size=100,
                   optimizer=optimizer, loss="categorical_crossentropy", validation=validation,
                   train_size=1000, test_size=300, seed=seed, callbacks=callbacks)


@pytest.fixture(scope="module")
def data(mnist):
    return load_tensors("mnist", train_size=1000, test_size=300)


def test_each_step_uses_the_schedule_at_the_optimizer_step_count(data, monkeypatch):
    import mnistlab.engine.fit as engine
    used, real = [], engine.build_optimizer

    def recording(call, params):
        optimizer = real(call, params)
        step = optimizer.step
        optimizer.step = lambda *a, **k: (used.append(optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
        return optimizer
    monkeypatch.setattr(engine, "build_optimizer", recording)
    text = "sgd(learning_rate=PiecewiseConstantDecay((3, 12), (0.1, 0.05, 0.01)))"
    result = fit(spec(text), data)  # 10 steps an epoch
    assert used == [0.1] * 4 + [0.05] * 9 + [0.01] * 7  # steps 0..3, 4..12, 13..19
    assert [row["lr"] for row in result.history] == [0.1, 0.05]  # the epoch's first step: steps 0 and 10


def test_grouped_members_follow_their_own_schedules_with_the_same_numbers_as_alone(data):
    specs = [spec("sgd(learning_rate=ExponentialDecay(0.2, decay_steps=7, decay_rate=0.5))", seed=1),
             spec("sgd(learning_rate=CosineDecayRestarts(0.1, 6))", seed=2), spec("sgd(learning_rate=0.05)", seed=3)]
    assert len({group_key(s) for s in specs}) == 1  # schedules group; each member keeps its own
    together = fit_group(specs, data)
    for s, member in zip(specs, together):
        alone = fit(s, data)
        assert [r["lr"] for r in member.history] == [r["lr"] for r in alone.history]
        assert [r["loss"] for r in member.history] == pytest.approx([r["loss"] for r in alone.history], rel=1e-4)
        assert member.test_loss == pytest.approx(alone.test_loss, rel=1e-4)
    assert together[0].history[1]["lr"] == pytest.approx(0.2 * 0.5 ** (10 / 7))


SWEEP = """
name = "s"
[train]
optimizer = "Adadelta(learning_rate=ExponentialDecay(1.0, decay_rate={gamma}, decay_steps=938, staircase=True))"
[[model]]
name = "m"
layers = ["Dense(10, activation='softmax')"]
[sweep]
gamma = [0.7, 0.9]
"""


def test_schedules_sweep_through_templates_and_canonical_text():
    runs = expand(parse_study(SWEEP))
    assert [r.optimizer for r in runs] == [
        f"adadelta(learning_rate=ExponentialDecay(1.0, decay_rate={g}, decay_steps=938, staircase=True))"
        for g in (0.7, 0.9)]
    assert runs[0].id != runs[1].id and runs[0].point == "gamma=0.7"
    same = SWEEP.replace("decay_rate={gamma}, decay_steps=938", "decay_steps=938, decay_rate={gamma}")
    assert [r.id for r in expand(parse_study(same))] == [r.id for r in runs]  # argument order does not matter
    swept = SWEEP.replace("gamma = [0.7, 0.9]", '"optimizer.learning_rate" = [0.5, "CosineDecay(0.1, 100)"]') \
        .replace("{gamma}", "0.7")
    texts = [r.optimizer for r in expand(parse_study(swept))]
    assert texts == ["adadelta(learning_rate=0.5)", "adadelta(learning_rate=CosineDecay(0.1, 100))"]


def test_unknown_schedule_names_file_line_and_model(write_study):
    path = write_study(SWEEP.replace("ExponentialDecay", "ExpoDecay").replace("gamma = [0.7, 0.9]", "gamma = [0.7]"))
    with pytest.raises(StudyError) as error:
        load_study(path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: model 'm'") and "ExpoDecay" in message and "\n" not in message


PYTORCH_EXAMPLE = """
name = "pytorch-examples-mnist"
description = "pytorch/examples mnist/main.py: Adadelta(1.0), the learning rate x0.7 after every epoch"
[train]
epochs = 2
batch_size = 64
optimizer = "Adadelta(learning_rate=ExponentialDecay(1.0, decay_steps=4, decay_rate=0.7, staircase=True))"
validation = 0.25
train_size = 320
test_size = 200
[[model]]
name = "net"
layers = ["Conv2D(32, 3, activation='relu')", "Conv2D(64, 3, activation='relu')", "MaxPooling2D(2)",
          "Dropout(0.25)", "Flatten()", "Dense(128, activation='relu')", "Dropout(0.5)",
          "Dense(10, activation='softmax')"]
"""


def test_pytorch_examples_mnist_network_parses_and_trains_on_a_slice(write_study, mnist):
    from mnistlab.api import summaries
    study = load_study(write_study(PYTORCH_EXAMPLE))
    assert "1,199,882" in summaries(study)[0][1]  # the parameter count of pytorch/examples' Net
    (run,) = expand(study)
    result = fit(run, load_tensors("mnist", image=True, train_size=320, test_size=200))
    assert result.status == "done" and len(result.history) == 2
    assert [r["lr"] for r in result.history] == [1.0, 0.7]  # 240 training images: 4 steps an epoch
    assert sum(map(sum, result.confusion_train)) == 240 and sum(map(sum, result.confusion_test)) == 200
    assert math.isfinite(result.history[-1]["val_loss"]) and result.test_accuracy > 0.2


def test_report_draws_the_learning_rate_where_it_varies():
    from mnistlab.report.figures import curves
    varying = [[{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "lr": 0.1 * 0.7 ** e} for e in (1, 2, 3)]]
    fig = curves("m", varying).to_plotly_json()
    (lr,) = [t for t in fig["data"] if t["name"] == "learning rate"]
    assert list(lr["y"]) == pytest.approx([0.07, 0.049, 0.0343]) and fig["layout"]["yaxis3"]["type"] == "log"
    constant = [[dict(row, lr=0.1) for row in varying[0]]]
    assert not [t for t in curves("m", constant).data if t.name == "learning rate"]


def test_a_swept_schedule_is_stored_per_epoch_and_plotted(write_study, tmp_path, mnist):
    import mnistlab
    from mnistlab.report.html import write_report
    text = SWEEP.replace("[train]", "[train]\nepochs = 3\nbatch_size = 100\ntrain_size = 500\ntest_size = 200") \
        .replace("decay_steps=938", "decay_steps=5")
    path = write_study(text)
    outcome = mnistlab.run(path)
    assert len(outcome.trained) == 2 and not outcome.failed
    store = mnistlab.Store.for_study(path)
    for run in store.runs(study="s"):
        gamma = run["spec"]["sweep"]["gamma"]
        assert store.load_json(run["id"], "lr") == pytest.approx([1.0, gamma, gamma ** 2])
    page = write_report(store, "s", tmp_path / "s.html").read_text()
    assert page.count('"name":"learning rate"') == 2  # one curve figure per grid point


def test_a_grouped_run_resumes_at_its_schedule_position(data):
    from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
    from mnistlab.engine.fit import Callbacks
    specs = [spec("sgd(learning_rate=ExponentialDecay(0.2, decay_steps=7, decay_rate=0.5))", seed=s, epochs=3)
             for s in (1, 2)]
    saved = {s.id: [] for s in specs}
    hooks = [Callbacks(on_epoch=lambda row, ck, i=s.id: saved[i].append(checkpoint_to_arrays(ck))) for s in specs]
    full = fit_group(specs, data, hooks)
    resumed = fit_group(specs, data, resume=[checkpoint_from_arrays(*saved[s.id][0]) for s in specs])
    for a, b in zip(full, resumed):  # SGD keeps no step count of its own: the checkpoint carries it
        assert [r["lr"] for r in b.history] == [r["lr"] for r in a.history]
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-6)
    alone = fit(specs[0], data, resume=checkpoint_from_arrays(*saved[specs[0].id][1]))  # the plain engine reads it too
    assert alone.history[-1]["lr"] == full[0].history[-1]["lr"] and alone.test_loss == pytest.approx(full[0].test_loss, rel=1e-4)
