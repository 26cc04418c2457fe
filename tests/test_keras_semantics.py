"""Keras semantics the engine used to get wrong: the loss and the last layer, the train columns,
Flatten's feature order, and engine-numerics versions kept apart in tables."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab.api import load_model, load_study
from mnistlab.engine.fit import fit
from mnistlab.engine.layers import Flatten, build_model, input_shape
from mnistlab.engine.losses import parse_loss
from mnistlab.errors import StudyError
from mnistlab.numerics import NUMERICS
from mnistlab.report.table import comparison, render
from mnistlab.runner.driver import data_for
from mnistlab.spec import expand, parse_call
from mnistlab.store import Store

from conftest import tiny_study
from test_runner import mnistlab, store_of

MLP = ["Dense(32, activation='relu')", "Dense(10, activation='softmax')"]


def study_text(last: str, loss: str | None = None) -> str:
    loss_line = f'loss = "{loss}"\n' if loss else ""
    return (f'name = "loss"\n[train]\nepochs = 1\n{loss_line}train_size = 500\ntest_size = 100\n'
            f'[[model]]\nname = "m"\nlayers = ["Dense(16, activation=\'relu\')", "{last}"]\n')


@pytest.mark.parametrize("last, loss, message", [
    ("Dense(10, activation='sigmoid')", None, "expects probabilities from a softmax last layer, but it has activation='sigmoid'"),
    ("Dense(10)", None, "activation='linear'; use activation='softmax', or a linear last layer with loss"),
    ("Dense(10, activation='softmax')", "CategoricalCrossentropy(from_logits=True)", "needs a linear last layer"),
    ("Dense(10, activation='softmax')", "mean_squared_error", "unknown loss 'mean_squared_error'"),
    ("Dense(10, activation='softmax')", "CategoricalCrossentropy(from_logits=1)", "from_logits must be True or False"),
])
def test_a_loss_the_engine_cannot_compute_is_a_one_line_error(tmp_path, last, loss, message):
    path = tmp_path / "s.toml"
    path.write_text(study_text(last, loss))
    with pytest.raises(StudyError) as info:
        load_study(path)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text
    if loss is None or "from_logits=True" in loss:
        assert "model 'm'" in text and "layer 2" in text  # names the model and the layer


def test_from_logits_with_a_linear_last_layer_trains(tmp_path, mnist):
    path = tmp_path / "s.toml"
    text = study_text("Dense(10)", "CategoricalCrossentropy(from_logits=True)")
    path.write_text(text.replace("epochs = 1", "epochs = 3").replace("train_size = 500", "train_size = 2000")
                    .replace("Dense(16", "Dense(64"))
    study = load_study(path)
    assert parse_loss(study.train.loss).from_logits
    spec = expand(study)[0]
    result = fit(spec, data_for(spec))
    assert result.history[-1]["loss"] < 1.0 and result.test_accuracy > 0.75  # a sigmoid output never got below 1.46


def test_run_ids_keep_the_default_loss_spelling():
    study_a = tiny_study(models={"m": MLP})
    from mnistlab.spec import expand, parse_study
    spec = expand(parse_study(study_a))[0]
    assert spec.loss == "categorical_crossentropy"  # same text as before the loss was parsed: same ids


def test_flatten_orders_features_as_keras_does():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # (N, C, H, W)
    out = Flatten()(x)
    # Keras: (N, H, W, C) flattened, so feature (h, w, c) sits at (h * W + w) * C + c
    for h in range(2):
        for w in range(2):
            for c in range(3):
                assert out[1, (h * 2 + w) * 3 + c] == x[1, c, h, w]
    assert torch.equal(Flatten()(x.contiguous(memory_format=torch.channels_last)), out)
    assert torch.equal(Flatten()(torch.ones(4, 7)), torch.ones(4, 7))


def test_input_shape_helper():
    cnn = [parse_call(s) for s in ("Conv2D(4, (3, 3))", "Flatten()", "Dense(10, activation='softmax')")]
    mlp = [parse_call(s) for s in MLP]
    assert input_shape(cnn) == (1, 28, 28) and input_shape(mlp) == (784,)
    assert build_model(cnn, input_shape(cnn)).torch_input_shape == (1, 28, 28)


def test_train_columns_are_keras_history_and_the_eval_pass_is_kept(write_study, mnist):
    path = write_study(tiny_study(models={"m": ["Dense(32, activation='relu')", "Dropout(0.5)",
                                                "Dense(10, activation='softmax')"]}, epochs=2))
    mnistlab("run", path, "-q")
    store = store_of(path)
    run = store.runs(study="tiny")[0]
    last = store.history(run["id"])[-1]
    row = comparison(store, "tiny")[0]
    assert row.stats["train_loss"].mean == pytest.approx(last["loss"])  # Keras' history['loss'][-1]
    assert row.stats["train_accuracy"].mean == pytest.approx(last["accuracy"])
    assert row.stats["train_loss_eval"].mean == pytest.approx(run["train_loss"])  # the evaluation pass
    assert row.stats["train_loss"].mean != pytest.approx(row.stats["train_loss_eval"].mean)  # dropout: they differ
    data = json.loads(render([row], "json"))[0]
    assert data["train_loss_eval"]["mean"] == pytest.approx(run["train_loss"]) and data["numerics"] == NUMERICS


def test_runs_of_different_numerics_are_never_pooled(write_study, mnist):
    path = write_study(tiny_study(models={"m": MLP}, epochs=1, extra="repeats = 2"))
    mnistlab("run", path, "-q")
    store = store_of(path)
    runs = store.runs(study="tiny")
    assert {r["environment"]["numerics"] for r in runs} == {NUMERICS}
    old = dict(runs[0]["environment"])
    del old["numerics"]  # a run from before versions were recorded: version 1
    store.finish(runs[0]["id"], "done", environment=old)
    rows = comparison(store, "tiny")
    assert sorted(r.label for r in rows) == ["m", "m (numerics 1)"]
    assert [r.stats["test_accuracy"].n for r in rows] == [1, 1]
    table = mnistlab("table", path, "--format", "markdown").stdout
    assert "m (numerics 1)" in table


def test_runs_of_different_precisions_are_never_pooled(write_study, mnist):
    """bf16 and fp32 runs share an id (precision is how, not what): a study trained in fp32 and
    continued with --precision bf16 pooled both kinds of repeat into one mean."""
    path = write_study(tiny_study(models={"m": MLP, "n": ["Dense(10, activation='softmax')"]}, epochs=1,
                                  extra="repeats = 2"))
    mnistlab("run", path, "-q")
    store = store_of(path)
    first = next(r for r in store.runs(study="tiny") if r["model"] == "m")
    store.finish(first["id"], "done", environment=dict(first["environment"], precision="bf16"))
    rows = comparison(store, "tiny")
    assert {r.label: r.stats["test_accuracy"].n for r in rows} == {"m (bf16)": 1, "m (fp32)": 1, "n": 2}  # n: one way
    assert "m (bf16)" in mnistlab("table", path, "--format", "markdown").stdout


def test_a_version_1_cnn_loads_with_torch_flatten_order(write_study, mnist):
    cnn = ["Conv2D(4, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "Flatten()", "Dense(10, activation='softmax')"]
    path = write_study(tiny_study(models={"c": cnn}, epochs=1))
    mnistlab("run", path, "-q")
    store = store_of(path)
    run = store.runs(study="tiny")[0]
    model, _ = load_model(store, run["id"])
    assert all(m.keras_order for m in model.modules() if isinstance(m, Flatten))
    env = dict(run["environment"])
    del env["numerics"]
    store.finish(run["id"], "done", environment=env)
    model, _ = load_model(store, run["id"])
    assert not any(m.keras_order for m in model.modules() if isinstance(m, Flatten))
