"""EarlyStopping and ReduceLROnPlateau: Keras 3's semantics on scripted metric sequences, in a real
run (stop, restored weights, stored and shown), resumed exactly, and refused with one-line errors."""

import math

import pytest
import torch

from mnistlab.api import load_study
from mnistlab.data import load_tensors
from mnistlab.engine.callbacks import EarlyStopping, ReduceLROnPlateau, Training, build_callbacks
from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
from mnistlab.engine.fit import Callbacks, fit
from mnistlab.engine.group import group_key
from mnistlab.engine.schedules import LearningRate
from mnistlab.errors import StudyError
from mnistlab.spec import RunSpec


def drive(callback, values, monitor="val_loss", lr=0.1):
    """Feed ``values`` epoch by epoch as Keras' fit loop would; (epochs run, lr per epoch, training)."""
    training = Training([callback], LearningRate(lr), weights=lambda: {"epoch": torch.tensor(epoch)})
    rates = []
    for epoch, value in enumerate(values):
        rates.append(training.lr.at(0))
        training.epoch_end(epoch, {monitor: value})
        if training.stop_training:
            break
    return epoch + 1, rates, training


@pytest.mark.parametrize("kwargs, values, stops_after", [
    ({}, [1.0, 0.9, 0.95, 0.8], 3),  # patience 0: the first epoch without improvement ends it
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.93, 0.96, 0.5], 4),
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.89, 0.96, 0.97, 0.98], 6),  # 0.89 resets the wait
    ({"patience": 1, "min_delta": 0.05}, [1.0, 0.97, 0.5], 2),  # 0.03 better is no improvement
    ({"patience": 1, "start_from_epoch": 3}, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 5),  # epochs 0-2 are not watched
    ({"patience": 2, "baseline": 0.5}, [1.0, 0.9, 0.95, 0.8], 3),  # improving, but never beating the baseline
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.8], None),  # the same without a baseline runs on
    ({"monitor": "val_accuracy", "patience": 2}, [0.5, 0.6, 0.55, 0.58, 0.7], 4),  # auto: accuracy goes up
    ({"mode": "max", "patience": 2}, [1.0, 1.1, 1.05, 1.02], 4),
])
def test_early_stopping_epoch_on_a_scripted_sequence(kwargs, values, stops_after):
    monitor = kwargs.get("monitor", "val_loss")
    ran, _, training = drive(EarlyStopping(**kwargs), values, monitor)
    assert training.stopped_epoch == stops_after and ran == (stops_after or len(values))
    assert stops_after is None or monitor in training.reason


def test_early_stopping_runs_on_while_improving():
    ran, _, training = drive(EarlyStopping(patience=1), [1.0, 0.9, 0.8, 0.7])
    assert ran == 4 and not training.stop_training and training.record() is None


def test_restore_best_weights_returns_the_best_epoch_even_without_a_stop():  # Keras 3, not Keras 2
    _, _, training = drive(EarlyStopping(patience=5, restore_best_weights=True), [1.0, 0.7, 0.8, 0.9])
    assert int(training.train_end()["epoch"]) == 1
    assert training.record() == {"stopped_epoch": None, "reason": None, "restored_epoch": 2}
    _, _, training = drive(EarlyStopping(patience=1, restore_best_weights=True), [1.0, 0.7, 0.8, 0.9])
    assert int(training.train_end()["epoch"]) == 1 and training.record()["stopped_epoch"] == 3


def test_reduce_lr_on_plateau_lr_sequence():
    values = [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    callback = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    _, rates, _ = drive(callback, values, lr=0.1)
    # epoch 0 best; 1, 2 wait -> halve after 2; 3 ends the cooldown and waits (Keras counts it); halve after 4;
    # 5 improves; 6, 7 wait -> 0.0125 is below min_lr: 0.02 after 7; then at min_lr nothing changes
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02], rel=1e-6)


def test_reduce_lr_on_plateau_on_accuracy_and_min_delta():
    callback = ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=1, min_delta=0.01)
    _, rates, _ = drive(callback, [0.5, 0.505, 0.6, 0.6], monitor="val_accuracy", lr=1.0)
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.1], rel=1e-6)  # 0.505 is not 0.01 better


@pytest.mark.parametrize("text, message", [
    ("ReduceLROnPlateau(factor=1.5)", "factor must be in (0, 1)"),
    ("EarlyStopping(patience=-1)", "patience must be a whole number >= 0"),
    ("EarlyStopping(mode='up')", "mode must be one of auto, min, max"),
    ("EarlyStoping()", "did you mean 'EarlyStopping'"),
    ("EarlyStopping(monitr='loss')", "did you mean 'monitor'"),
])
def test_bad_callbacks_are_refused(text, message):
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_callbacks([text])


MLP = ("Dense(32, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')")


def spec(callbacks, optimizer="adam()", epochs=5, validation="test"):
    return RunSpec(study="t", model="m", layers=MLP, dataset="mnist", epochs=epochs, batch_size=100,
                   optimizer=optimizer, loss="categorical_crossentropy", validation=validation,
                   train_size=1000, test_size=300, seed=3, callbacks=tuple(callbacks))


@pytest.fixture(scope="module")
def data(mnist):
    return load_tensors("mnist", train_size=1000, test_size=300)


# the training loss falls every epoch, so in mode 'max' it never improves after epoch 1: a sure stop
STOP = "EarlyStopping(monitor='loss', mode='max', patience=2, restore_best_weights=True)"


def test_a_stopped_run_keeps_its_best_weights_and_says_where_it_stopped(data):
    saved = []
    result = fit(spec([STOP]), data, Callbacks(on_epoch=lambda row, ck: saved.append(ck)))
    assert len(result.history) == 3 and result.stopped["stopped_epoch"] == 3 and result.stopped["restored_epoch"] == 1
    assert "loss did not improve" in result.stopped["reason"]
    for name, tensor in saved[0].model.items():  # the final weights are epoch 1's, and so the metrics
        assert torch.equal(result.weights[name], tensor.cpu())
    assert group_key(spec([STOP])) is None  # callbacks act on one run: such runs train alone


def test_resume_with_schedule_and_early_stopping_equals_uninterrupted(data):
    run = spec([STOP.replace("patience=2", "patience=3")],
               optimizer="sgd(learning_rate=ExponentialDecay(0.3, decay_steps=7, decay_rate=0.5))", epochs=6)
    saved = []
    full = fit(run, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))))
    assert full.stopped["stopped_epoch"] == 4
    for epoch in (2, 4):  # mid-way (best weights and wait counter in the checkpoint), and after the stop
        resumed = fit(run, data, resume=checkpoint_from_arrays(*saved[epoch - 1]))
        assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
        assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
        assert resumed.test_loss == full.test_loss and resumed.confusion_test == full.confusion_test
        assert resumed.stopped == full.stopped


def test_resume_with_reduce_lr_on_plateau_equals_uninterrupted(data):
    run = spec(["ReduceLROnPlateau(monitor='loss', mode='max', factor=0.5, patience=1, cooldown=2)"],
               optimizer="sgd(learning_rate=0.2)", epochs=5)
    saved = []
    full = fit(run, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))))
    assert [r["lr"] for r in full.history] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05], rel=1e-6)
    resumed = fit(run, data, resume=checkpoint_from_arrays(*saved[1]))  # mid-cooldown, lr lowered once
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
    assert resumed.test_loss == full.test_loss and resumed.weights.keys() == full.weights.keys()


STUDY = """
name = "cb"
seed = 1
[train]
epochs = 4
batch_size = 100
train_size = 1000
test_size = 300
validation = "{validation}"
optimizer = "{optimizer}"
callbacks = ["{callback}"]
[[model]]
name = "mlp"
layers = ["Dense(32, activation='relu')", "Dense(10, activation='softmax')"]
"""


def study_text(callback=STOP, validation="test", optimizer="adam"):
    return STUDY.format(callback=callback.replace('"', "'"), validation=validation, optimizer=optimizer)


@pytest.mark.parametrize("kwargs, message", [
    ({"callback": "EarlyStopping(monitor='val_loss')", "validation": "none"},
     "monitors 'val_loss', which the run does not log with validation = \"none\"; it logs loss, accuracy"),
    ({"callback": "EarlyStopping(monitor='val_acc')"}, "monitors 'val_acc'"),
    ({"callback": "EarlyStopper(patience=2)"}, "unknown callback 'EarlyStopper'; did you mean 'EarlyStopping'?"),
    ({"callback": "ReduceLROnPlateau()", "optimizer": "SGD(learning_rate=CosineDecay(0.1, 100))"},
     "follows a schedule"),
])
def test_callback_errors_name_file_line_model_and_call(write_study, kwargs, message):
    path = write_study(study_text(**kwargs))
    with pytest.raises(StudyError) as error:
        load_study(path)
    text = str(error.value)
    assert text.startswith(f"{path}:11: model 'mlp': callback ") and message in text and "\n" not in text


def test_per_model_callbacks_replace_the_study_ones_and_enter_the_run_id(write_study):
    from mnistlab.spec import expand
    text = study_text("EarlyStopping(patience=1)") + 'callbacks = []\n[[model]]\nname = "other"\n' \
        'layers = ["Dense(10, activation=\'softmax\')"]\n'
    runs = {r.model: r for r in expand(load_study(write_study(text)))}
    assert runs["mlp"].callbacks == () and runs["other"].callbacks == ("EarlyStopping(patience=1)",)
    assert "callbacks" not in runs["mlp"].identity() and runs["other"].identity()["callbacks"]


def test_stopped_run_in_store_table_and_report(write_study, tmp_path, mnist):
    import mnistlab
    from mnistlab.report.html import write_report
    from mnistlab.report.table import comparison, render
    path = write_study(study_text(STOP))
    mnistlab.run(path)
    store = mnistlab.Store.for_study(path)
    (run,) = store.runs(study="cb")
    assert run["status"] == "done" and run["environment"]["early_stopping"]["stopped_epoch"] == 3
    assert len(store.load_json(run["id"], "lr")) == 3
    (row,) = comparison(store, "cb")
    assert row.status == "done" and row.status_text == "done (stopped at 3)"
    assert "done (stopped at 3)" in render([row], "markdown")
    page = write_report(store, "cb", tmp_path / "r.html").read_text()
    assert "stopped after epoch 3" in page and "final figures from the weights of epoch 1" in page
    assert not math.isnan(run["test_accuracy"])
