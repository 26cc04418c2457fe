"""validation = 0.1: Keras' validation_split (the last images, before shuffling), val_* from the split,
the test set scored once at the end; the split grouped as alone; bad values refused; ids kept."""

import hashlib
import math

import numpy as np
import pytest
import torch

from mnistlab.api import load_study
from mnistlab.data import load_tensors, split_index
from mnistlab.engine.fit import evaluate, fit, make_model
from mnistlab.engine.group import fit_group
from mnistlab.errors import DataError, StudyError
from mnistlab.spec import RunSpec, expand, parse_study


@pytest.mark.parametrize("n, fraction, train", [(60000, 0.1, 54000), (1000, 0.15, 850), (7, 0.5, 3), (10, 0.33, 6)])
def test_split_index_is_keras_floor_of_n_times_one_minus_fraction(n, fraction, train):
    assert split_index(n, fraction) == train == int(np.floor(n * (1.0 - fraction)))


def test_a_split_that_leaves_nothing_is_refused():
    for n, fraction in ((1, 0.5), (10, 1e-17)):  # nothing would train; nothing would validate
        with pytest.raises(DataError, match="cannot be split"):
            split_index(n, fraction)
    assert split_index(5, 0.1) == 4


def test_split_holds_out_the_last_training_images_before_shuffling(mnist):
    (x, y), _ = mnist
    data = load_tensors("mnist", train_size=1000, test_size=100).split(0.2)
    assert data.x_train.shape == (800, 784) and data.x_val.shape == (200, 784)
    assert np.array_equal((data.x_val.numpy() * 255).round().astype(np.uint8), x[800:1000].reshape(200, 784))
    assert np.array_equal(data.y_val.numpy(), y[800:1000]) and np.array_equal(data.y_train.numpy(), y[:800])
    assert data.x_test.shape == (100, 784)  # the test set is untouched


MLP = ("Dense(32, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')")


def spec(validation, seed=1, optimizer="adam()"):
    return RunSpec(study="t", model="m", layers=MLP, dataset="mnist", epochs=2, batch_size=100,
                   optimizer=optimizer, loss="categorical_crossentropy", validation=validation,
                   train_size=1000, test_size=300, seed=seed)


@pytest.fixture(scope="module")
def data(mnist):
    return load_tensors("mnist", train_size=1000, test_size=300)


def test_val_figures_come_from_the_split_and_the_test_set_is_scored_at_the_end(data):
    result = fit(spec(0.2), data)
    model = make_model(spec(0.2), data)
    model.load_state_dict(result.weights)
    val_loss, val_accuracy, _ = evaluate(model, data.x_train[800:], data.y_train[800:])
    assert result.history[-1]["val_accuracy"] == pytest.approx(val_accuracy)
    assert result.history[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-6)
    test_loss, test_accuracy, _ = evaluate(model, data.x_test, data.y_test)
    assert result.test_accuracy == pytest.approx(test_accuracy) and result.history[-1]["val_loss"] != test_loss
    assert sum(map(sum, result.confusion_train)) == 800  # the held-out images never trained
    none = fit(spec("none"), data)
    assert "val_loss" not in none.history[-1] and math.isfinite(none.test_loss)


def test_split_trains_on_the_first_images_only(data):
    kept = fit(spec(0.2), data)
    assert torch.equal(data.split(0.2).x_train, data.x_train[:800])
    alone = fit(RunSpec(**{**spec("none").__dict__, "train_size": 800}), load_tensors("mnist", train_size=800,
                                                                                     test_size=300))
    assert [r["loss"] for r in kept.history] == [r["loss"] for r in alone.history]  # same images, same order


def test_grouped_split_equals_alone(data):
    specs = [spec(0.2, seed=s, optimizer=f"sgd(learning_rate={lr})") for s, lr in ((1, 0.05), (2, 0.1))]
    for member, s in zip(fit_group(specs, data), specs):
        alone = fit(s, data)
        assert [r["val_loss"] for r in member.history] == pytest.approx([r["val_loss"] for r in alone.history], rel=1e-4)
        assert member.test_loss == pytest.approx(alone.test_loss, rel=1e-4)


STUDY = """
name = "v"
[train]
epochs = 1
validation = {validation}
train_size = {train_size}
[[model]]
name = "m"
layers = ["Dense(10, activation='softmax')"]
"""


@pytest.mark.parametrize("validation, message", [
    ("1.5", 'train.validation: must be "test", "none" or the fraction of the training images to hold out'),
    ("0", "got 0"), ('"train"', "got 'train'"), ("true", "got True"),
])
def test_bad_validation_is_one_line_naming_the_line(write_study, validation, message):
    path = write_study(STUDY.format(validation=validation, train_size=100))
    with pytest.raises(StudyError) as error:
        load_study(path)
    assert str(error.value).startswith(f"{path}:5: ") and message in str(error.value) and "\n" not in str(error.value)


def test_a_split_too_small_for_train_size_is_refused_at_load(write_study):
    path = write_study(STUDY.format(validation=0.5, train_size=1))
    with pytest.raises(StudyError, match=f"{path}:5: 1 training images cannot be split"):
        load_study(path)


def test_validation_enters_the_id_and_existing_studies_keep_theirs():
    ids = {v: expand(parse_study(STUDY.format(validation=v, train_size=100)))[0].id for v in ('"test"', "0.1", "0.2")}
    assert len(set(ids.values())) == 3
    # the ids of the built-in studies before schedules, callbacks and splits existed (main at 68179e4)
    before = {"quick": "cb0f177f2a1169ef", "seed000_mlp_depth_bn_dropout": "a47f39ff4dc47220",
              "seed001_cnn_optimizers": "48f2c76b21f69ce0", "seed002_sgd_lr_width_noise_l2": "865ca000d883607b",
              "seed002_tasks_1_2ab": "099c540200b0d124", "seed003_small_mlps": "4039cd3f2bd64db7",
              "seed004_cnn_kernels": "b7a7226dc2b52df0"}
    from pathlib import Path
    studies = Path(__file__).resolve().parents[1] / "studies"
    for name, digest in before.items():
        ids = [r.id for r in expand(load_study(studies / f"{name}.toml"))]
        assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == digest, name


def test_the_readme_study_with_schedule_callback_and_split_loads(write_study):
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme.split("## A study", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    runs = expand(load_study(write_study(text)))  # every call checked, as `mnistlab run` does
    assert len(runs) == 2 * 4 * 3 and {r.validation for r in runs} == {0.1}
    assert runs[0].callbacks and "ExponentialDecay" in runs[0].optimizer
