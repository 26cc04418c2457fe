"""The built-in studies in studies/: every file loads, and each seed notebook's study declares the
notebook's models (same layers, same parameter counts as printed) with the notebook's epochs, batch
size, optimizer and repeats. Nothing trains here: building on torch's 'meta' device is enough."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import pytest

import mnistlab
from mnistlab.spec.calls import Call, parse_call
from mnistlab.engine.layers import build_model, input_kind
from mnistlab.spec import RunSpec, expand
from seed_models import SEED_LAYER_PARAMS, SEED_MODELS, SEED_TOTALS

STUDIES = Path(__file__).resolve().parent.parent / "studies"
ALL_STUDIES = sorted(STUDIES.glob("*.toml"))

# notebook (the prefix of the seed model names) -> its export and its built-in study
NOTEBOOKS = {
    "000": ("000_f3f0e2416279204c.txt", "seed000_mlp_depth_bn_dropout.toml"),
    "001": ("001_07a9121b0c74b7ff.txt", "seed001_cnn_optimizers.toml"),
    "002": ("002_bad35e849adfb296.txt", "seed002_sgd_lr_width_noise_l2.toml"),
    "003": ("003_9c108f37a24ff779.txt", "seed003_small_mlps.toml"),
    "004": ("004_9062e2f283384650.txt", "seed004_cnn_kernels.toml"),
}
SEED002_SUBSET = "seed002_tasks_1_2ab.toml"   # tasks 1, 2a, 2b of seed 002 on their own

# What each notebook trained: study model name -> (seed models in tests/seed_models.py, one per grid
# point; epochs; batch size; optimizers as the notebook called them, one per grid point; repeats).
_ADAM, _SGD01 = ["adam"], ["SGD(lr=0.1)"]
NOTEBOOK_SETTINGS: dict[str, dict[str, tuple[list[str], int, int, list[str], int]]] = {
    "000": {  # cell In [18]: batch_size = 128, nb_epoch = 30; compile(optimizer='adam')
        "relu 2 (364, 212)": (["000 relu 2"], 30, 128, _ADAM, 1),
        "relu 3 (621, 333, 161)": (["000 relu 3"], 30, 128, _ADAM, 1),
        "relu 5 (697, 550, 462, 322, 199)": (["000 relu 5"], 30, 128, _ADAM, 1),
        "batch 2 (532, 384)": (["000 batch 2"], 30, 128, _ADAM, 1),
        "batch 3 (589, 423, 272)": (["000 batch 3"], 30, 128, _ADAM, 1),
        "batch 5 (667, 579, 499, 349, 205)": (["000 batch 5"], 30, 128, _ADAM, 1),
        "drop 2 (532, 384)": (["000 drop 2"], 30, 128, _ADAM, 1),
        "drop 3 (401, 219, 121)": (["000 drop 3"], 30, 128, _ADAM, 1),
        "drop 5 (609, 599, 410, 232, 144)": (["000 drop 5"], 30, 128, _ADAM, 1),
    },
    "001": {  # cell In [7]: batch_size = 140, epochs = 20
        "model 1: cnn 16-32-64-128 3x3 same, relu, adam": (["001 model 1"], 20, 140, _ADAM, 1),
        "model 2: cnn 32-64 3x3, sigmoid, adadelta": (["001 model 2"], 20, 140, ["Adadelta()"], 1),
        "model 3: cnn 32-64 3x3, sigmoid, sgd": (["001 model 3"], 20, 140, ["SGD()"], 1),
        "model 4: cnn 16-32-64-64-128-256 5x5 same, he_normal, adam": (["001 model 4"], 20, 140, _ADAM, 1),
    },
    "002": {  # batch_size = 128 except task 4 (28); SGD(lr = ...)
        "task 1: mlp (125, 100, 50)": (["002 task 1"], 10, 128, _SGD01, 1),
        "task 2a: mlp (100), 30 epochs": (["002 task 2"], 30, 128, _SGD01, 1),
        "task 2b: mlp (100), lr sweep": (["002 task 2"], 10, 128,
                                         [f"SGD(lr={lr})" for lr in (0.001, 0.01, 0.1, 1)], 3),
        "task 2c: mlp (1000), lr sweep": (["002 task 2c"], 10, 128,
                                          [f"SGD(lr={lr})" for lr in (0.001, 0.025, 0.01, 0.05, 0.1)], 3),
        "task 3a: input noise, mlp (100)": ([f"002 task 3a noise {s}" for s in (0.1, 1, 10)], 30, 128, _SGD01, 1),
        "task 3b: noise 0.1 + l2, mlp (100)": ([f"002 task 3b l2 {x}" for x in (0.001, 0.01, 0.1)], 10, 128,
                                               _SGD01, 1),
        "task 4: cnn (64, 64), dense (100, 50)": (["002 task 4"], 30, 28, ["SGD(lr=0.2)"], 1),
    },
    "003": {  # cell In [33]: batch_size = 128, n_epoch = 15; compile(optimizer='adam')
        "model 1 (64, 128)": (["003 model 1"], 15, 128, _ADAM, 1),
        "model 1 (64, 128) bn drop": (["003 model 1 bn"], 15, 128, _ADAM, 1),
        "model 2 (64, 128, 256)": (["003 model 2"], 15, 128, _ADAM, 1),
        "model 2 (64, 128, 256) bn drop": (["003 model 2 bn"], 15, 128, _ADAM, 1),
        "model 3 (32, 64, 128, 256, 512)": (["003 model 3"], 15, 128, _ADAM, 1),
        "model 3 (32, 64, 128, 256, 512) bn drop": (["003 model 3 bn"], 15, 128, _ADAM, 1),
    },
    "004": {  # batch_size = 128, epochs = 12; keras.optimizers.Adadelta()
        "model 1: conv 64 3x3, 128 3x3, dense 128": (["004 model 1"], 12, 128, ["Adadelta()"], 1),
        "model 2: conv 64 3x3, 128 5x5, dense 256 bn": (["004 model 2"], 12, 128, ["Adadelta()"], 1),
        "model 3: conv 64 5x5, 128 7x7, dense 256 bn, 128 bn": (["004 model 3"], 12, 128, ["Adadelta()"], 1),
    },
}


@lru_cache(maxsize=None)
def _study(notebook: str):
    return mnistlab.load_study(STUDIES / NOTEBOOKS[notebook][1])


def _normal(call: Call) -> Call:
    """A layer call without what does not change the model: input_shape/input_dim, and ``seed=None``
    (or any None) inside initializers; 'he_normal' and he_normal() are the same initializer."""
    def value(v):
        if isinstance(v, Call):
            return _normal(v)
        if isinstance(v, str) and v.isidentifier():
            return Call(v)
        return v
    kwargs = tuple((k, value(v)) for k, v in call.kwargs if k not in ("input_shape", "input_dim") and v is not None)
    return Call(call.name, tuple(value(a) for a in call.args), kwargs)


def _layers(texts) -> tuple[str, ...]:
    return tuple(_normal(parse_call(t)).text() for t in texts)


def _optimizer(text: str) -> tuple[str, dict]:
    call = parse_call(text, bare_name_ok=True)
    return call.name.lower(), {("learning_rate" if k == "lr" else k): v for k, v in call.kwargs}


def _build(run: RunSpec):
    calls = run.layer_calls()
    shape = (1, 28, 28) if input_kind(calls) == "image" else (784,)   # as api.check_study chooses
    return build_model(calls, shape, device="meta")


@pytest.mark.parametrize("path", ALL_STUDIES, ids=[p.name for p in ALL_STUDIES])
def test_every_study_loads(path):
    study = mnistlab.load_study(path)   # schema, layers, optimizers, dataset: all checked, nothing trained
    assert expand(study)


EXPERIMENTS = sorted([*(STUDIES.parent / "docs" / "experiments").glob("*.toml"),
                      *(STUDIES.parent / "benchmarks").glob("*.toml")])


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_documented_experiment_loads(path):
    assert expand(mnistlab.load_study(path))


def test_seed002_l2_repeats_extend_the_seed_study_runs():
    """REPRODUCTION.md reads the 5-seed experiment as more runs of task 3b: its first seed must be
    the seed study's own run (same content id), not a look-alike with other settings."""
    seed_ids = {r.id for r in expand(mnistlab.load_study(STUDIES / "seed002_sgd_lr_width_noise_l2.toml"))}
    runs = expand(mnistlab.load_study(STUDIES.parent / "docs" / "experiments" / "seed002_l2_repeats.toml"))
    assert len(runs) == 10 and {r.repeat for r in runs} == set(range(5))
    assert {r.id for r in runs if r.repeat == 0} <= seed_ids
    assert not {r.id for r in runs if r.repeat} & seed_ids


def test_there_is_a_study_per_notebook():
    names = {p.name for p in ALL_STUDIES}
    assert {study for _, study in NOTEBOOKS.values()} | {SEED002_SUBSET, "quick.toml"} <= names


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_study_names_its_notebook(notebook):
    export, study = NOTEBOOKS[notebook]
    assert export in (STUDIES / study).read_text(), f"{study} should say which notebook it reproduces"


@pytest.mark.parametrize("seed_model", sorted(SEED_TOTALS))
def test_seed_totals_are_built(seed_model):
    """Every parameter total a notebook printed is the total of a model in its built-in study."""
    runs = {run.layers: run for run in expand(_study(seed_model[:3]))}
    counts = {layers: _build(run).count_params() for layers, run in runs.items()}
    assert SEED_TOTALS[seed_model] in counts.values(), (seed_model, SEED_TOTALS[seed_model], sorted(counts.values()))


@pytest.mark.parametrize("seed_model", sorted(SEED_LAYER_PARAMS))
def test_seed_layer_params_are_built(seed_model):
    """The per-layer "Param #" column as printed (a prefix where cut off), also for models without a total."""
    printed = SEED_LAYER_PARAMS[seed_model]
    rows = [[r[3] for r in _build(run).summary_rows()] for run in expand(_study(seed_model[:3]))]
    assert any(r[:len(printed)] == printed for r in rows), (seed_model, printed)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_every_seed_model_and_only_those(notebook):
    table = NOTEBOOK_SETTINGS[notebook]
    assert {m.name for m in _study(notebook).models} == set(table)
    covered = {name for seeds, *_ in table.values() for name in seeds}
    assert covered == {name for name in SEED_MODELS if name.startswith(notebook)}


@pytest.mark.parametrize("notebook, model", [(n, m) for n in sorted(NOTEBOOK_SETTINGS) for m in NOTEBOOK_SETTINGS[n]])
def test_notebook_layers_and_settings(notebook, model):
    seeds, epochs, batch_size, optimizers, repeats = NOTEBOOK_SETTINGS[notebook][model]
    runs = [run for run in expand(_study(notebook)) if run.model == model]
    assert runs, f"no model {model!r} in {NOTEBOOKS[notebook][1]}"
    assert {_layers(run.layers) for run in runs} == {_layers(SEED_MODELS[s]) for s in seeds}
    assert {run.epochs for run in runs} == {epochs}
    assert {run.batch_size for run in runs} == {batch_size}
    ours = [_optimizer(run.optimizer) for run in runs]
    theirs = [_optimizer(text) for text in optimizers]
    assert all(o in theirs for o in ours) and all(t in ours for t in theirs), (ours, theirs)
    points = len(seeds) * len(optimizers)   # the grid: one layer variant or one optimizer per point
    assert len(runs) == points * repeats
    assert {run.repeat for run in runs} == set(range(repeats))


def test_seed002_subset_is_the_same_runs_as_the_full_study():
    """The tasks 1/2a/2b file declares what the full seed 002 study does: same run ids, same model names."""
    subset = expand(mnistlab.load_study(STUDIES / SEED002_SUBSET))
    full = {run.id: run for run in expand(_study("002"))}
    assert [run.model for run in subset if run.id in full] == [run.model for run in subset]
    assert all(full[run.id].model == run.model and full[run.id].point == run.point for run in subset)
    tasks = {"task 1: mlp (125, 100, 50)", "task 2a: mlp (100), 30 epochs", "task 2b: mlp (100), lr sweep"}
    assert {run.model for run in subset} == tasks
    assert len(subset) == sum(run.model in tasks for run in full.values()) == 1 + 1 + 4 * 3


# ---- the two studies that show what the tool does (issue "Everything a Keras user trains with", item 7)

SHOWCASES = {"best_mnist.toml": ("mnist", 1), "fashion_mnist.toml": ("fashion_mnist", 3)}


@pytest.mark.parametrize("name", sorted(SHOWCASES))
def test_showcase_studies_declare_their_dataset_and_seeds(name):
    study = mnistlab.load_study(STUDIES / name)
    dataset, models = SHOWCASES[name]
    runs = expand(study)
    assert study.dataset == dataset and len(study.models) == models
    assert len(runs) == 3 * models and {r.repeat for r in runs} == {0, 1, 2}   # mean of 3 seeds each
    assert len({r.seed for r in runs if r.model == runs[0].model}) == 3


@pytest.mark.parametrize("name", sorted(SHOWCASES))
def test_showcase_models_train_a_step_on_a_slice(name, mnist):
    """One batch of 64 images per model (not the study: the lead trains it in the background). On
    Fashion-MNIST when it is cached, else on MNIST's images, which have the same shape."""
    from dataclasses import replace

    from mnistlab.data import cache_path, load_tensors
    from mnistlab.engine.fit import data_shape, fit
    for run in expand(mnistlab.load_study(STUDIES / name)):
        if run.repeat:
            continue
        dataset = run.dataset if cache_path(run.dataset).exists() else "mnist"
        spec = replace(run, dataset=dataset, epochs=1, batch_size=64, train_size=64, test_size=64)
        data = load_tensors(dataset, image=data_shape(spec), train_size=64, test_size=64)
        result = fit(spec, data)
        assert result.status == "done" and len(result.history) == 1, run.model
        assert math.isfinite(result.history[0]["loss"]) and sum(map(sum, result.confusion_test)) == 64


def test_best_mnist_augments_before_its_convolutions():
    run = expand(mnistlab.load_study(STUDIES / "best_mnist.toml"))[0]
    model = _build(run)
    kinds = [r[1] for r in model.summary_rows()]
    assert kinds[:3] == ["RandomRotation", "RandomZoom", "RandomTranslation"] and kinds[3] == "Conv2D"
    # Deotte's Keras summary: 327,242 parameters, 832 of them BatchNorm's moving statistics
    assert model.count_params() == (327_242, 326_410, 832)
