"""The engine on real MNIST slices: it learns, it is deterministic, it reports divergence."""

import math

import pytest

from mnistlab.data import load_tensors
from mnistlab.spec import RunSpec
from mnistlab.engine.checkpoint import checkpoint_from_arrays, checkpoint_to_arrays
from mnistlab.engine.fit import Callbacks, confusion, data_shape, fit
from mnistlab.engine.options import EngineOptions

RELU_2 = ("Dense(364, activation='relu', kernel_initializer=RandomNormal(mean=0.0, stddev=0.074))",
          "Dense(212, activation='relu', kernel_initializer=RandomNormal(mean=0.0, stddev=0.097))",
          "Dense(10, activation='softmax')")
CNN = ("Conv2D(16, (3, 3), activation='relu')", "MaxPooling2D((2, 2))", "Conv2D(32, (3, 3), activation='relu')",
       "MaxPooling2D((2, 2))", "Flatten()", "Dense(64, activation='relu')", "Dense(10, activation='softmax')")


def run_spec(layers=RELU_2, epochs=1, optimizer="adam()", train_size=None, test_size=None, batch_size=128, seed=1):
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=epochs, batch_size=batch_size,
                   optimizer=optimizer, loss="categorical_crossentropy", validation="test",
                   train_size=train_size, test_size=test_size, seed=seed)


def tensors(spec):
    return load_tensors("mnist", image=data_shape(spec), train_size=spec.train_size, test_size=spec.test_size)


@pytest.mark.slow
def test_seed_000_relu_2_one_epoch_full_mnist(mnist):
    spec = run_spec()
    result = fit(spec, tensors(spec))
    assert result.status == "done" and result.params == (365_250, 365_250, 0)
    assert result.test_accuracy > 0.95  # the notebook reaches 0.9817 after 30 epochs
    row = result.history[0]
    assert set(row) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert row["val_accuracy"] == pytest.approx(result.test_accuracy)  # validation is the test set
    assert sum(map(sum, result.confusion_test)) == 10_000
    assert sum(result.confusion_test[i][i] for i in range(10)) == round(result.test_accuracy * 10_000)


def test_small_cnn_learns_on_a_slice(mnist):
    spec = run_spec(CNN, epochs=2, train_size=3000, test_size=1000, batch_size=64)
    result = fit(spec, tensors(spec))
    assert result.test_accuracy > 0.85
    assert result.history[1]["loss"] < result.history[0]["loss"]


def test_mlp_on_10k_learns_in_one_epoch(mnist):
    # a plain PyTorch loop of this model and slice measured 0.876-0.897 over 5 seeds (79 Adam steps)
    spec = run_spec(train_size=10_000, test_size=2000)
    assert fit(spec, tensors(spec)).test_accuracy > 0.85
    spec = run_spec(train_size=10_000, test_size=2000, batch_size=32)  # Keras' default batch: 313 steps
    assert fit(spec, tensors(spec)).test_accuracy > 0.9


def test_same_seed_same_numbers_other_seed_other_numbers(mnist):
    spec = run_spec(["Dense(32, activation='relu')", "Dropout(0.2)", "Dense(10, activation='softmax')"],
                    epochs=2, train_size=2000, test_size=500)
    data = tensors(spec)
    a, b = fit(spec, data), fit(spec, data)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert a.test_loss == b.test_loss
    c = fit(run_spec(spec.layers, epochs=2, train_size=2000, test_size=500, seed=2), data)
    assert c.test_loss != a.test_loss


def test_history_loss_is_a_running_mean_over_the_epoch(mnist):
    seen = []
    spec = run_spec(["Dense(10, activation='softmax')"], train_size=1000, test_size=200, batch_size=100)
    result = fit(spec, tensors(spec), Callbacks(on_batch=lambda b, n, loss, acc: seen.append((b, n, loss))))
    assert seen[-1] == (10, 10, result.history[0]["loss"])
    # training accuracy is running (weights change as it accumulates), not a re-evaluation at the end
    assert 0 < result.history[0]["accuracy"] < 1 and result.history[0]["accuracy"] != result.train_accuracy


def test_diverging_run_is_reported_not_raised(mnist):
    spec = run_spec(["Dense(32, activation='relu')", "Dense(10, activation='softmax')"], epochs=3,
                    optimizer="sgd(learning_rate=1e30)", train_size=1000, test_size=200)
    result = fit(spec, tensors(spec))
    assert result.status == "diverged"
    assert "training loss became nan" in result.error.lower() or "inf" in result.error.lower()
    assert len(result.history) < 3 and math.isnan(result.test_accuracy)


def test_resume_from_checkpoint_equals_uninterrupted(mnist):
    spec = run_spec(["Dense(32, activation='relu')", "BatchNormalization()", "Dropout(0.3)",
                     "Dense(10, activation='softmax')"], epochs=3, train_size=2000, test_size=500)
    data = tensors(spec)
    saved = []
    full = fit(spec, data, Callbacks(on_epoch=lambda row, ck: saved.append(checkpoint_to_arrays(ck))))
    resumed = fit(spec, data, resume=checkpoint_from_arrays(*saved[0]))  # as if killed after epoch 1
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.test_loss == full.test_loss and resumed.confusion_test == full.confusion_test


def test_confusion_counts():
    import torch
    y, p = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert confusion(y, p, classes=3) == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_channels_last_and_contiguous_agree(mnist, monkeypatch):
    import mnistlab.engine.fit as train
    spec = run_spec(CNN, epochs=1, train_size=600, test_size=200, batch_size=50)
    data = tensors(spec)
    fast = fit(spec, data)
    plain = fit(spec, data, options=EngineOptions(channels_last=False))
    assert fast.engine["channels_last"] and not plain.engine["channels_last"]
    assert fast.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-4)
    assert fast.test_loss == pytest.approx(plain.test_loss, rel=1e-3)
    assert fast.weights["conv2d_1.weight"].shape == plain.weights["conv2d_1.weight"].shape == (16, 1, 3, 3)


def test_evaluation_batch_is_bounded_by_the_widest_layer():
    from mnistlab.engine.layers import build_model
    from mnistlab.spec.calls import parse_call
    from mnistlab.engine.fit import EVAL_BATCH, EVAL_BYTES, eval_batch, widest_layer
    mlp = build_model([parse_call(c) for c in RELU_2], (784,))
    cnn = build_model([parse_call(c) for c in ("Conv2D(32, (3, 3), padding='same', activation='relu')", "Flatten()",
                                               "Dense(10, activation='softmax')")], (1, 28, 28))
    assert widest_layer(mlp) == 784 and widest_layer(cnn) == 32 * 28 * 28
    assert eval_batch(widest_layer(mlp)) == EVAL_BATCH  # an MLP's activations are small: the largest batch
    size = eval_batch(widest_layer(cnn))
    assert size < EVAL_BATCH and size * 32 * 28 * 28 * 4 <= EVAL_BYTES < (size + 1) * 32 * 28 * 28 * 4
    assert eval_batch(784, members=32) == EVAL_BYTES // (4 * 784 * 32)  # a group shares the budget
    assert eval_batch(10**12) == 1


def test_batched_prediction_equals_one_pass(mnist, monkeypatch):
    import torch

    import mnistlab.engine.fit as train
    spec = run_spec(CNN, epochs=1, train_size=300, test_size=1000, batch_size=50)
    data = tensors(spec)
    model = train.make_model(spec, data)
    model.eval()
    with torch.inference_mode():
        whole = model(data.x_test)
    budget = 4 * 16 * 26 * 26 * 300  # 300 images a batch: 4 batches, the last short
    assert train.eval_batch(train.widest_layer(model), budget=budget) == 300
    batched = train.predict(model, data.x_test, budget)
    assert batched.shape == (1000, 10)
    torch.testing.assert_close(batched, whole, rtol=1e-5, atol=1e-5)
