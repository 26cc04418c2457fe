"""Preprocessing and augmentation layers in training: a study with each trains on a slice; a run
with them is reproducible, resumes exactly from a mid-run checkpoint, adapts Normalization to the
images it trains on, and is trained alone (not grouped, not on the graph-free MLP step)."""

from __future__ import annotations

import textwrap

import pytest
import torch

import mnistlab
from mnistlab.data import load_tensors
from mnistlab.engine import fast
from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
from mnistlab.engine.fit import Callbacks, data_shape, fit, make_model
from mnistlab.engine.group import group_key
from mnistlab.spec import RunSpec

CONV = ("Conv2D(4, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "Flatten()", "Dense(10, activation='softmax')")
EACH = ["Rescaling(2.0, offset=-1.0)", "Normalization(mean=0.1307, variance=0.09492561)", "Normalization()",
        "RandomRotation(0.1)", "RandomTranslation(0.1, 0.1, fill_mode='constant')", "RandomZoom(0.2, 0.1)",
        "RandomFlip('horizontal')", "RandomContrast(0.3, value_range=(0, 1))"]
AUGMENTED = ("RandomRotation(0.05, fill_mode='constant')", "RandomTranslation(0.1, 0.1, fill_mode='constant')",
             "RandomZoom(0.1)", "Normalization()") + CONV


def run_spec(layers, epochs=1, train_size=512, test_size=256, seed=3, batch_size=64) -> RunSpec:
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=epochs, batch_size=batch_size,
                   optimizer="adam()", loss="categorical_crossentropy", validation="test",
                   train_size=train_size, test_size=test_size, seed=seed)


def tensors(spec: RunSpec):
    return load_tensors("mnist", image=data_shape(spec), train_size=spec.train_size, test_size=spec.test_size)


def test_a_study_with_each_layer_parses_and_trains(write_study, mnist):
    models = "".join(f'''
        [[model]]
        name = "{layer.replace('"', "'")}"
        layers = ["{layer}", {", ".join(f'"{c}"' for c in CONV)}]
        ''' for layer in EACH)
    path = write_study(f'''\
        name = "each-layer"
        [train]
        epochs = 1
        batch_size = 64
        train_size = 256
        test_size = 128
        ''' + textwrap.dedent(models))
    outcome = mnistlab.run(path)
    assert len(outcome.trained) == len(EACH) and not outcome.failed and not outcome.diverged
    # the adapted statistics travel with the stored weights: predict and export rebuild them
    from mnistlab.api import load_model
    store = mnistlab.Store.for_study(path)
    run = next(r for r in store.runs(study="each-layer") if r["spec"]["layers"][0] == "Normalization()")
    model, _ = load_model(store, run["id"])
    images = load_tensors("mnist", image=True, train_size=256, test_size=1).x_train.double()
    assert model.normalization_1.mean.item() == pytest.approx(images.mean().item(), rel=1e-6)


def test_augmented_cnn_learns_and_is_reproducible(mnist):
    spec = run_spec(AUGMENTED, epochs=2, train_size=1024)
    first, again = fit(spec, tensors(spec)), fit(spec, tensors(spec))
    assert [r["loss"] for r in first.history] == [r["loss"] for r in again.history]
    assert first.test_loss == again.test_loss
    assert first.test_accuracy > 0.3   # measured 0.48 after 2 epochs on 1,024 images (4 filters); chance 0.1
    assert first.history[1]["loss"] < first.history[0]["loss"]
    plain = fit(run_spec(AUGMENTED[3:], epochs=2, train_size=1024), tensors(spec))
    assert plain.history[0]["loss"] != first.history[0]["loss"]   # the draws change training


def test_resume_mid_run_equals_uninterrupted(mnist):
    """Killed after epoch 1 of 3: weights, optimizer, the shuffling and augmentation generators and the
    adapted statistics come back from the checkpoint, and the numbers are those of a run never stopped."""
    spec = run_spec(AUGMENTED, epochs=3)
    data = tensors(spec)
    saved = []
    full = fit(spec, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))))
    assert "normalization_1.mean" in checkpoint_from_arrays(*saved[0]).model
    resumed = fit(spec, data, resume=checkpoint_from_arrays(*saved[0]))
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.test_loss == full.test_loss and resumed.confusion_test == full.confusion_test
    assert torch.equal(resumed.weights["conv2d_1.weight"], full.weights["conv2d_1.weight"])


def test_normalization_adapts_to_the_images_the_run_trains_on(mnist):
    spec = run_spec(("Normalization()",) + CONV, train_size=300)
    data = tensors(spec)
    model = make_model(spec, data)
    x = data.x_train.double()
    assert model.normalization_1.mean.item() == pytest.approx(x.mean().item(), rel=1e-6)
    assert model.normalization_1.variance.item() == pytest.approx(x.var(unbiased=False).item(), rel=1e-6)
    other = make_model(run_spec(spec.layers, train_size=600), tensors(run_spec(spec.layers, train_size=600)))
    assert other.normalization_1.mean.item() != model.normalization_1.mean.item()
    result = fit(spec, data)
    assert result.weights["normalization_1.mean"].item() == pytest.approx(x.mean().item(), rel=1e-6)


@pytest.mark.parametrize("layer", EACH)
def test_runs_with_preprocessing_train_alone(layer):
    mlp = ("Flatten()", "Dense(32, activation='relu')", "Dense(10, activation='softmax')")
    assert group_key(run_spec(mlp)) is not None   # the same MLP without it groups
    spec = run_spec((layer,) + mlp)
    assert group_key(spec) is None
    data = load_tensors("mnist", image=data_shape(spec), train_size=8, test_size=8)
    assert not fast.supports(make_model(spec, data))


def test_run_ids_change_with_the_layers_settings():
    ids = {run_spec(("RandomRotation(0.1)",) + CONV).id, run_spec(("RandomRotation(0.2)",) + CONV).id,
           run_spec(("RandomRotation(0.1, fill_mode='constant')",) + CONV).id, run_spec(CONV).id}
    assert len(ids) == 4
