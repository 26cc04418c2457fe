"""layers.py against references: Keras' printed summaries, hand-computed statistics and penalties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mnistlab.spec.calls import Call, parse_call
from mnistlab.engine.layers import (ACTIVATIONS, INITIALIZERS, LAYERS, REGULARIZERS, LayerError, Sequential,
                             build_model, check_model, input_kind)
from seed_models import SEED_LAYER_PARAMS, SEED_MODELS, SEED_TOTALS


def calls(layers):
    return [parse_call(s) for s in layers]


def model(*layers, **kwargs) -> Sequential:
    return build_model(calls(layers), **kwargs)


# ---- the seed notebooks' models, counted as Keras printed them

@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model_counts_equal_keras(name):
    m = build_model(calls(SEED_MODELS[name]))
    total, trainable, frozen = m.count_params()
    if name in SEED_TOTALS:
        assert (total, trainable, frozen) == SEED_TOTALS[name]
    printed = SEED_LAYER_PARAMS.get(name, [])
    assert [row[3] for row in m.summary_rows()][: len(printed)] == printed
    assert total == sum(p.numel() for p in m.parameters()) + frozen   # frozen = BN moving mean + variance
    assert len(m.summary_rows()) == len(SEED_MODELS[name])


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_models_build_the_same_without_input_shape(name):
    stripped = [Call(c.name, c.args, tuple((k, v) for k, v in c.kwargs if k != "input_shape"))
                for c in calls(SEED_MODELS[name])]
    with_shape, without = build_model(calls(SEED_MODELS[name])), build_model(stripped)
    assert with_shape.count_params() == without.count_params()
    assert with_shape.input_shape == without.input_shape


def test_seed_totals_cover_every_printed_total():
    assert set(SEED_TOTALS) <= set(SEED_MODELS) and set(SEED_LAYER_PARAMS) <= set(SEED_MODELS)
    assert len(SEED_TOTALS) == 17


def test_summary_text_equals_keras_printout_004_model_1():
    printed = """\
_________________________________________________________________
Layer (type)                 Output Shape              Param #   
=================================================================
conv2d_1 (Conv2D)            (None, 26, 26, 64)        640       
_________________________________________________________________
conv2d_2 (Conv2D)            (None, 24, 24, 128)       73856     
_________________________________________________________________
max_pooling2d_1 (MaxPooling2 (None, 12, 12, 128)       0         
_________________________________________________________________
dropout_1 (Dropout)          (None, 12, 12, 128)       0         
_________________________________________________________________
flatten_1 (Flatten)          (None, 18432)             0         
_________________________________________________________________
dense_1 (Dense)              (None, 128)               2359424   
_________________________________________________________________
dropout_2 (Dropout)          (None, 128)               0         
_________________________________________________________________
dense_2 (Dense)              (None, 10)                1290      
=================================================================
Total params: 2,435,210
Trainable params: 2,435,210
Non-trainable params: 0
_________________________________________________________________"""  # noqa: W291 -- Keras pads rows
    assert build_model(calls(SEED_MODELS["004 model 1"])).summary() == printed


def test_summary_cuts_long_names_like_keras():
    text = build_model(calls(SEED_MODELS["000 batch 2"])).summary()
    assert "batch_normalization_1 (Batch (None, 532)               2128      " in text.splitlines()


def test_output_shapes_001_model_1_as_printed():
    rows = build_model(calls(SEED_MODELS["001 model 1"])).summary_rows()
    assert [r[2] for r in rows] == [
        (None, 28, 28, 16), (None, 28, 28, 32), (None, 14, 14, 32), (None, 14, 14, 32), (None, 14, 14, 32),
        (None, 14, 14, 64), (None, 14, 14, 128), (None, 7, 7, 128), (None, 7, 7, 128), (None, 6272),
        (None, 512), (None, 10)]
    assert [r[:2] for r in rows][:4] == [("conv2d_1", "Conv2D"), ("conv2d_2", "Conv2D"),
                                         ("max_pooling2d_1", "MaxPooling2D"),
                                         ("batch_normalization_1", "BatchNormalization")]


def test_output_shapes_001_model_4_and_002_task_4_as_printed():
    rows = build_model(calls(SEED_MODELS["001 model 4"])).summary_rows()
    assert [r[2][1:] for r in rows if r[1] in ("Conv2D", "MaxPooling2D")] == [
        (28, 28, 16), (28, 28, 32), (14, 14, 32), (14, 14, 64), (14, 14, 64), (7, 7, 64),
        (7, 7, 128), (3, 3, 128), (3, 3, 256), (1, 1, 256)]
    rows = build_model(calls(SEED_MODELS["002 task 4"])).summary_rows()
    assert [r[2] for r in rows][:6] == [(None, 28, 28, 1), (None, 26, 26, 64), (None, 13, 13, 64),
                                        (None, 11, 11, 64), (None, 5, 5, 64), (None, 1600)]


def test_module_names_and_kernels_by_layer_name():
    m = build_model(calls(SEED_MODELS["004 model 2"]))
    assert [r[0] for r in m.summary_rows()] == [
        "conv2d_1", "conv2d_2", "max_pooling2d_1", "dropout_1", "flatten_1", "dense_1",
        "batch_normalization_1", "dropout_2", "dense_2"]
    assert {k: tuple(v.shape) for k, v in m.kernels().items()} == {
        "conv2d_1": (64, 1, 3, 3), "conv2d_2": (128, 64, 5, 5), "dense_1": (256, 15488), "dense_2": (10, 256)}
    assert "dense_1.weight" in m.state_dict() and "conv2d_1_relu" in dict(m.named_children())
    assert not m.kernels()["dense_1"].requires_grad


@pytest.mark.parametrize("name", ["001 model 1", "001 model 4", "002 task 4", "003 model 3 bn", "000 drop 2"])
def test_forward_gives_logits_for_flat_or_image_batches(name):
    m = build_model(calls(SEED_MODELS[name])).eval()
    flat = torch.rand(3, 784)
    image = flat.reshape(3, 1, 28, 28)
    out = m(flat)
    assert out.shape == (3, 10) and torch.equal(out, m(image))
    assert m.output_activation == "softmax" and not torch.allclose(out.sum(1), torch.ones(3))
    assert not isinstance(list(m.children())[-1], torch.nn.Softmax)


def test_other_output_activations_are_applied():
    m = model("Dense(10, activation='sigmoid')")
    assert m.output_activation == "sigmoid"
    x = torch.randn(4, 784)
    assert torch.allclose(m(x), torch.sigmoid(m.dense_1(x)))
    m = model("Flatten()", "Dense(10)", "Activation('softmax')")
    assert m.output_activation == "softmax" and [r[0] for r in m.summary_rows()][-1] == "activation_1"
    assert model("Dense(10)").output_activation == "linear"


def test_input_kind_and_default_input_shapes():
    assert input_kind(calls(SEED_MODELS["001 model 1"])) == "image"
    assert input_kind(calls(SEED_MODELS["002 task 4"])) == "image"       # GaussianNoise, then Conv2D
    assert input_kind(calls(SEED_MODELS["002 task 1"])) == "flat"        # Flatten first
    assert input_kind(calls(["Flatten()", "Conv2D(8, 3)"])) == "flat"
    assert model("Conv2D(4, 3)", "Flatten()", "Dense(10)").torch_input_shape == (1, 28, 28)
    assert model("Dense(10, input_dim=784)").input_shape == (784,)
    assert model("Flatten(input_shape=(28, 28, 1))", "Dense(10)", input_shape=(784,)).input_shape == (28, 28, 1)


@pytest.mark.parametrize("name", ["001 model 2", "002 task 4", "002 task 1", "000 relu 2", "002 task 3a noise 1"])
@pytest.mark.parametrize("data", [(784,), (1, 28, 28)])
def test_data_in_either_layout_feeds_either_kind_of_model(name, data):
    """The engine passes x_train.shape[1:]: flat or (C, H, W), whatever the model declares."""
    m = build_model(calls(SEED_MODELS[name]), data)
    kind = input_kind(calls(SEED_MODELS[name]))
    assert m.input_shape == {"image": (28, 28, 1), "flat": (784,)}[kind]
    assert m.count_params() == build_model(calls(SEED_MODELS[name])).count_params()
    assert m.eval()(torch.rand((2, *data))).shape == (2, 10)
    assert model("Conv2D(4, 3)", "Flatten()", "Dense(10)", input_shape=(3, 32, 32)).input_shape == (32, 32, 3)


def test_keras_aliases_and_int_sizes():
    m = model("Convolution2D(4, 3)", "MaxPool2D(2)", "AvgPool2D(pool_size=2, strides=1)", "Flatten()", "Dense(10)")
    assert [r[2] for r in m.summary_rows()][:3] == [(None, 26, 26, 4), (None, 13, 13, 4), (None, 12, 12, 4)]


@pytest.mark.parametrize("n,k,s", [(28, 4, 2), (7, 2, 2), (7, 3, 2), (5, 2, 1), (6, 3, 1), (9, 4, 3)])
def test_same_padding_matches_tensorflow(n, k, s):
    x = torch.randn(1, n * n)
    for kind, reduce in (("MaxPooling2D", torch.amax), ("AveragePooling2D", torch.mean)):
        m = model(f"{kind}({k}, strides={s}, padding='same')", "Flatten()", input_shape=(1, n, n),
                  num_classes=math.ceil(n / s) ** 2)
        out = -(-n // s)
        before = max((out - 1) * s + k - n, 0) // 2        # TF: the odd padding pixel goes after
        img = x.reshape(n, n)
        ref = torch.stack([reduce(img[max(i * s - before, 0): i * s - before + k, max(j * s - before, 0): j * s - before + k])
                           for i, j in itertools.product(range(out), range(out))])
        assert torch.allclose(m(x)[0], ref, atol=1e-6), kind
    conv = model(f"Conv2D(2, {k}, strides={s}, padding='same')", "Flatten()", input_shape=(1, n, n),
                 num_classes=2 * math.ceil(n / s) ** 2)
    assert conv.summary_rows()[0][2] == (None, -(-n // s), -(-n // s), 2)


# ---- initializers

def test_random_normal_stddev_and_seed_ignored():
    torch.manual_seed(0)
    m = model("Dense(364, kernel_initializer=RandomNormal(mean=0.0, stddev=0.074, seed=None))", "Dense(10)")
    w = m.kernels()["dense_1"]
    assert abs(w.std().item() / 0.074 - 1) < 0.02 and abs(w.mean().item()) < 0.001
    assert torch.equal(m.dense_1.bias, torch.zeros(364))                 # bias_initializer='zeros'
    model("Dense(10, kernel_initializer=RandomNormal(stddev=0.1, seed=42))")


def test_glorot_uniform_is_the_default_kernel_initializer():
    w = model("Dense(364)", "Dense(10)").kernels()["dense_1"]
    limit = math.sqrt(6 / (784 + 364))
    assert w.abs().max() <= limit and w.abs().max() > 0.99 * limit
    assert abs(w.std().item() / (limit / math.sqrt(3)) - 1) < 0.02


@pytest.mark.parametrize("spelling", ["'he_normal'", "he_normal(seed=None)", "HeNormal()", "'HeNormal'"])
def test_he_normal_is_truncated_with_keras_std(spelling):
    torch.manual_seed(1)
    m = model(f"Conv2D(64, 3, kernel_initializer={spelling})", "Flatten()",
              f"Dense(512, kernel_initializer={spelling})", "Dense(10)")
    for name, fan_in in (("conv2d_1", 9), ("dense_1", 26 * 26 * 64)):
        w, std = m.kernels()[name], math.sqrt(2 / fan_in)
        bound = 2 * std / 0.87962566103423978               # Keras 2.3: truncated at 2 of its own sigma
        assert w.abs().max() <= bound * (1 + 1e-6)
        assert abs(w.std().item() / std - 1) < (0.1 if name == "conv2d_1" else 0.01)
    assert (m.kernels()["dense_1"].abs() > 0.95 * bound).any()          # reaches the cut, not a narrow normal


def test_other_initializers():
    torch.manual_seed(2)
    w = model("Dense(300, kernel_initializer='glorot_normal')", "Dense(10)").kernels()["dense_1"]
    assert abs(w.std().item() / math.sqrt(2 / (784 + 300)) - 1) < 0.02
    w = model("Dense(300, kernel_initializer=RandomUniform())", "Dense(10)").kernels()["dense_1"]
    assert w.min() >= -0.05 and w.max() <= 0.05 and w.max() > 0.049
    m = model("Dense(10, kernel_initializer='zeros', bias_initializer=Constant(value=0.5))")
    assert m.dense_1.weight.abs().sum() == 0 and torch.all(m.dense_1.bias == 0.5)
    assert {"random_normal", "random_uniform", "glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
            "lecun_normal", "zeros", "ones"} <= set(INITIALIZERS)


# ---- BatchNormalization, GaussianNoise, regularizers

def test_batch_normalization_keras_momentum_epsilon_and_eval():
    m = model("BatchNormalization()", "Dense(10)", input_shape=(5,))
    bn = m.batch_normalization_1
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)
    x = torch.randn(64, 5) * 3 + 2
    m.train()(x)
    assert torch.allclose(bn.running_mean, 0.01 * x.mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, 0.99 + 0.01 * x.var(0, unbiased=True), atol=1e-5)
    bn.eval()
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + 1e-3)
    assert torch.allclose(bn(x), expected, atol=1e-5)
    conv = build_model(calls(SEED_MODELS["001 model 1"])).batch_normalization_1
    assert isinstance(conv, torch.nn.BatchNorm2d) and conv.num_features == 32      # Keras' channel axis
    assert model("BatchNormalization(momentum=0.9, epsilon=1e-5)", "Dense(10)").batch_normalization_1.momentum \
        == pytest.approx(0.1)


def test_gaussian_noise_only_in_training():
    noise = model("GaussianNoise(0.5)", "Flatten()", "Dense(10)").gaussian_noise_1
    x = torch.zeros(200_000)
    assert noise.eval()(x) is x
    y = noise.train()(x)
    assert abs(y.std().item() / 0.5 - 1) < 0.01 and abs(y.mean().item()) < 0.01


def test_l2_penalty_and_its_gradient_equal_keras():
    m = model("Dense(100, activation='relu', kernel_regularizer=l2(0.01))",
              "Dense(10, bias_initializer=RandomNormal(stddev=1.0), bias_regularizer=l1(0.5))")
    w, b = m.dense_1.weight, m.dense_2.bias
    loss = m.regularization_loss()
    assert loss.dim() == 0
    assert torch.allclose(loss, 0.01 * (w ** 2).sum() + 0.5 * b.abs().sum())
    loss.backward()
    assert torch.allclose(w.grad, 2 * 0.01 * w) and torch.allclose(b.grad, 0.5 * torch.sign(b))
    assert m.dense_2.weight.grad is None


def test_regularizer_spellings_and_no_penalty():
    for spelling, expected in (("l2(l2=0.01)", (0, 0.01)), ("'l2'", (0, 0.01)), ("l1_l2(l1=0.1, l2=0.2)", (0.1, 0.2)),
                               ("L1L2(l2=0.3)", (0, 0.3)), ("l1(0.1)", (0.1, 0))):
        penalty = model(f"Dense(10, kernel_regularizer={spelling})").layers[0].penalties[0][2]
        assert (penalty.l1, penalty.l2) == expected
    assert set(REGULARIZERS) >= {"l1", "l2", "l1_l2"}
    zero = model("Dense(10)").regularization_loss()
    assert zero.dim() == 0 and zero.item() == 0


def test_functional_call_sees_swapped_weights():
    m = model("Dense(32, activation='relu', kernel_regularizer=l2(0.01))", "Dense(10, activation='softmax')")
    params = {k: torch.zeros_like(v) for k, v in m.named_parameters()}
    x = torch.rand(4, 784)
    assert torch.equal(torch.func.functional_call(m, params, (x,)), torch.zeros(4, 10))

    class WithPenalty(torch.nn.Module):   # the training step's shape: outputs and penalty in one call
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x), self.m.regularization_loss()

    doubled = {f"m.{k}": 2 * v.detach() for k, v in m.named_parameters()}
    _, penalty = torch.func.functional_call(WithPenalty(), doubled, (x,))
    assert torch.allclose(penalty, 4 * m.regularization_loss())


def test_check_model_builds_on_meta_and_raises_the_same_errors():
    check_model(calls(SEED_MODELS["004 model 2"]))
    m = build_model(calls(SEED_MODELS["004 model 2"]), device="meta")
    assert m.dense_1.weight.is_meta and m.count_params()[0] == 4_174_346
    with pytest.raises(LayerError, match="did you mean 'Dense'"):
        check_model(calls(["Dence(10)"]))


def test_registries_hold_the_keras_names():
    assert set(LAYERS) == {"Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D", "BatchNormalization",
                           "Dropout", "Flatten", "GaussianNoise", "Activation",
                           # Keras 3's preprocessing and augmentation layers (engine/preprocessing.py)
                           "Rescaling", "Normalization", "RandomRotation", "RandomTranslation", "RandomZoom",
                           "RandomFlip", "RandomContrast"}
    assert {"relu", "sigmoid", "tanh", "elu", "selu", "softmax", "linear"} <= set(ACTIVATIONS)


# ---- errors: one line, where, what was received, what would be right

ERRORS = [
    (["Dence(10)"], 0, "layer 1: unknown layer 'Dence'; did you mean 'Dense'?"),
    (["Dense(unit=64)", "Dense(10)"], 0, "layer 1 (dense_1): Dense got unexpected argument 'unit'; did you mean 'units'?"),
    (["Dense(64, activation='rleu')", "Dense(10)"], 0, "Dense got unknown activation 'rleu'; did you mean 'relu'?"),
    (["Dense(-5)", "Dense(10)"], 0, "Dense units must be a positive whole number, got -5"),
    (["Dense(64.5)", "Dense(10)"], 0, "Dense units must be a positive whole number, got 64.5"),
    (["Dense()"], 0, "Dense needs argument 'units', e.g. Dense(units=...)"),
    (["Flatten()", "Dropout(1.0)", "Dense(10)"], 1, "layer 2 (dropout_1): Dropout rate is the fraction dropped and "
                                                    "must be in [0, 1), got 1.0"),
    (["Flatten()", "Dropout(-0.1)", "Dense(10)"], 1, "must be in [0, 1), got -0.1"),
    (["Dropout(0.5, None, None, 4)", "Dense(10)"], 0, "Dropout takes at most 3 positional arguments "
                                                      "(rate, noise_shape, seed), got 4"),
    (["Conv2D(8, 3)", "Flatten()", "Conv2D(8, 3)", "Dense(10)"], 2,
     "layer 3 (conv2d_2): Conv2D needs an image input (H, W, C) but gets (None, 5408) after flatten_1; "
     "put Conv2D layers before Flatten"),
    (["Conv2D(8, 3, input_shape=(784,))", "Flatten()", "Dense(10)"], 0,
     "Conv2D needs an image input (H, W, C) but gets (None, 784) from the model input; "
     "give the first layer input_shape=(28, 28, 1)"),
    (["Conv2D(8, 3, padding='same')"] + ["MaxPooling2D()"] * 5 + ["Flatten()", "Dense(10)"], 5,
     "layer 6 (max_pooling2d_5): MaxPooling2D with a 2x2 window needs at least 2x2 pixels but gets "
     "(None, 1, 1, 8) after max_pooling2d_4; use padding='same' or fewer pooling/conv layers"),
    (["Conv2D(8, 30)", "Flatten()", "Dense(10)"], 0, "Conv2D with a 30x30 window needs at least 30x30 pixels"),
    (["Conv2D(8, 3, padding='valdi')", "Flatten()", "Dense(10)"], 0,
     "Conv2D padding must be 'valid' or 'same', got 'valdi'"),
    (["Conv2D(8, (3, 3, 3))", "Flatten()", "Dense(10)"], 0, "kernel_size must be a positive whole number or a pair"),
    (["Conv2D(8, 3)", "Dense(10, activation='softmax')"], 1,
     "Dense needs a flat input (None, n) but gets (None, 26, 26, 8) after conv2d_1; put Flatten() before Dense"),
    (["Dense(64, activation='relu')"], 0, "layer 1 (dense_1): the last layer outputs 64 values; a 10-class dataset "
                                          "needs Dense(10, activation='softmax') last"),
    (["Conv2D(10, 3)"], 0, "the model's output is still an image (None, 26, 26, 10); end it with Flatten() and "
                           "Dense(10, activation='softmax')"),
    (["Dense(64, kernel_initializer='he_nomal')", "Dense(10)"], 0,
     "Dense got unknown kernel_initializer 'he_nomal'; did you mean 'he_normal'?"),
    (["Dense(64, kernel_initializer=RandomNormal(stdev=0.1))", "Dense(10)"], 0,
     "RandomNormal got unexpected argument 'stdev'; did you mean 'stddev'?"),
    (["Dense(64, kernel_initializer=3)", "Dense(10)"], 0, "Dense kernel_initializer must be a name like"),
    (["Dense(64, kernel_regularizer=l3(0.1))", "Dense(10)"], 0, "Dense got unknown kernel_regularizer 'l3'"),
    (["Conv2D(8, 3)", "BatchNormalization(axis=1)", "Flatten()", "Dense(10)"], 1,
     "BatchNormalization normalizes the last (channel) axis; got axis=1, use axis=-1"),
    (["Dense(64, input_shape=(700,))", "Dense(10)"], 0, "Dense declares input_shape=(700,) but each example has 784 "
                                                        "values (784,); drop input_shape or fix it"),
    (["Dense(64, name='hidden')", "Dense(10, name='hidden')"], 1, "name='hidden' must be a new identifier"),
    (["GaussianNoise(-1)", "Dense(10)"], 0, "GaussianNoise stddev must be a number >= 0, got -1"),
]


@pytest.mark.parametrize("layers,index,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_errors_say_where_what_and_the_fix(layers, index, message):
    given = (784,) if "input_shape=(700,)" in layers[0] else None
    with pytest.raises(LayerError) as info:
        build_model(calls(layers), given)
    assert message in str(info.value)
    assert info.value.index == index and "\n" not in str(info.value)
    assert str(info.value).startswith(f"layer {index + 1}")


def test_empty_model_error_has_no_index():
    with pytest.raises(LayerError, match="the model has no layers") as info:
        build_model([])
    assert info.value.index is None
