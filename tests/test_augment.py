"""Keras 3's preprocessing and augmentation layers (engine/augment.py, engine/preprocessing.py).

The reference for every geometric layer is a line-by-line port of Keras' torch backend
(``keras/src/backend/torch/image.py``: ``affine_transform`` + ``map_coordinates`` with its index
fixers) applied to the matrix Keras' layer builds (``_compute_affine_matrix``, the translation and
zoom matrices), image by image in float64 numpy; ours runs batched through ``F.grid_sample``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mnistlab.engine.augment import (Normalization, RandomContrast, RandomFlip, RandomRotation,
                                     RandomTranslation, RandomZoom, affine_transform)
from mnistlab.engine.layers import build_model, input_shape
from mnistlab.errors import LayerError
from mnistlab.spec.calls import parse_call

OUT = "Dense(10, activation='softmax')"


def model(*layers: str, shape=None):
    calls = [parse_call(t) for t in layers]
    return build_model(calls, shape or input_shape(calls))


# ---- the reference: Keras' torch backend, ported


def _mirror(index, size):
    s = size - 1
    return np.abs((index + s) % (2 * s) - s)


KERAS_FIXERS = {"constant": lambda i, n: np.clip(i, 0, n - 1), "nearest": lambda i, n: np.clip(i, 0, n - 1),
                "wrap": lambda i, n: i % n, "reflect": lambda i, n: (_mirror(2 * i + 1, 2 * n + 1) - 1) // 2}


def keras_affine(image: np.ndarray, m: np.ndarray, fill_mode: str, fill_value=0.0, order=1) -> np.ndarray:
    """keras.ops.image.affine_transform of one (H, W) image: output (x, y) samples input m @ (x, y, 1)."""
    h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    (a0, a1, a2), (b0, b1, b2) = m
    coordinates = (b0 * cols + b1 * rows + b2, a0 * cols + a1 * rows + a2)  # (row, column) read

    def nodes(c):
        if order == 0:
            return [(np.round(c).astype(int), 1.0)]
        lower = np.floor(c)
        return [(lower.astype(int), 1 - (c - lower)), (lower.astype(int) + 1, c - lower)]
    out = np.zeros((h, w))
    for (iy, wy), (ix, wx) in itertools.product(nodes(coordinates[0]), nodes(coordinates[1])):
        value = image[KERAS_FIXERS[fill_mode](iy, h), KERAS_FIXERS[fill_mode](ix, w)]
        if fill_mode == "constant":
            value = np.where((0 <= iy) & (iy < h) & (0 <= ix) & (ix < w), value, fill_value)
        out += wy * wx * value
    return out


def keras_rotation_matrix(degrees: float, h: int, w: int) -> np.ndarray:
    """Keras' _compute_affine_matrix with only an angle, centre ((W-1)/2, (H-1)/2)."""
    a = math.radians(degrees)
    cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
    a0, a1, b0, b1 = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return np.array([[a0, a1, cx - cx * a0 - cy * a1], [b0, b1, cy - cx * b0 - cy * b1]])


@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "wrap", "reflect"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_affine_transform_equals_keras_backend(fill_mode, interpolation):
    rng = np.random.default_rng(0)
    images = rng.random((16, 1, 7, 9))
    matrices = []
    for _ in range(16):   # rotation, scale and shifts that reach far outside the image
        a, s = rng.uniform(-math.pi, math.pi), rng.uniform(0.5, 1.8)
        matrices.append([[s * math.cos(a), -s * math.sin(a), rng.uniform(-12, 12)],
                         [s * math.sin(a), s * math.cos(a), rng.uniform(-12, 12)]])
    fill = 0.3 if fill_mode == "constant" else 0.0
    got = affine_transform(torch.tensor(images), torch.tensor(matrices, dtype=torch.float64), fill_mode, fill, interpolation).numpy()
    order = 1 if interpolation == "bilinear" else 0
    want = np.stack([keras_affine(images[i, 0], np.array(matrices[i]), fill_mode, fill, order) for i in range(16)])
    np.testing.assert_allclose(got[:, 0], want, atol=1e-9)


# ---- each layer against what its factors mean


def bright_pixel(h=9, w=9, row=2, col=6) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, row, col] = 1.0
    return x


@pytest.mark.parametrize("factor, where", [(0.25, (2, 2)), (-0.25, (6, 6)), (0.5, (6, 2))])
def test_rotation_of_a_bright_pixel_lands_where_the_rotation_matrix_says(factor, where):
    """(row 2, col 6) is up and right of the centre (4, 4): +90 degrees (counter-clockwise) takes it
    up and left to (2, 2), -90 down and right to (6, 6), 180 to (6, 2)."""
    layer = RandomRotation((factor, factor), fill_mode="constant").train()
    out = layer(bright_pixel())
    assert out[0, 0, where[0], where[1]].item() == pytest.approx(1.0, abs=1e-6)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_rotation_by_any_angle_equals_keras_matrix():
    image = np.random.default_rng(1).random((1, 1, 28, 28))
    layer = RandomRotation((30 / 360, 30 / 360), fill_mode="reflect").train()
    got = layer(torch.tensor(image))[0, 0].numpy()
    np.testing.assert_allclose(got, keras_affine(image[0, 0], keras_rotation_matrix(30, 28, 28), "reflect"), atol=1e-9)


def test_translation_shifts_by_the_fraction_of_the_size():
    image = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8) + 1
    layer = RandomTranslation((0.25, 0.25), (-0.125, -0.125), fill_mode="constant").train()
    out = layer(image)[0, 0]   # down by 0.25 * 8 = 2 rows, left by 0.125 * 8 = 1 column, zeros come in
    want = torch.zeros(8, 8, dtype=torch.float64)
    want[2:, :7] = image[0, 0, :6, 1:]
    torch.testing.assert_close(out, want)


def test_zoom_out_and_in_about_the_centre():
    image = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    out = RandomZoom((1.0, 1.0), None, fill_mode="constant").train()(image)[0, 0]   # zoom 2: half size
    torch.testing.assert_close(out[2:7, 2:7], image[0, 0, 0::2, 0::2])   # output x samples input 2x - 4
    assert out[0].abs().sum() == 0 and out[:, 8].abs().sum() == 0
    zoomed_in = RandomZoom((-0.5, -0.5), None).train()(image)[0, 0]      # zoom 0.5: input x / 2 + 2
    torch.testing.assert_close(zoomed_in[0::2, 0::2], image[0, 0, 2:7, 2:7])
    wide = RandomZoom((0.0, 0.0), (1.0, 1.0), fill_mode="constant").train()(image)[0, 0]  # width only
    torch.testing.assert_close(wide[:, 2:7], image[0, 0, :, 0::2])


def draws(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_follows_the_generator_draws(mode):
    images = torch.rand(32, 1, 5, 6, dtype=torch.float64)
    layer = RandomFlip(mode != "vertical", mode != "horizontal").train()
    layer.generator = torch.Generator().manual_seed(7)
    out = layer(images)
    flipped = draws(32, 7) <= 0.5   # Keras: uniform <= 0.5; one draw for both axes
    dims = {"horizontal": [3], "vertical": [2], "horizontal_and_vertical": [2, 3]}[mode]
    for i in range(32):
        torch.testing.assert_close(out[i], images[i].flip([d - 1 for d in dims]) if flipped[i] else images[i])
    assert 0 < flipped.sum() < 32


def test_contrast_scales_around_each_images_mean_and_clips():
    images = torch.rand(8, 2, 4, 4, dtype=torch.float64)
    layer = RandomContrast((0.5, 0.5), (0.0, 1.0)).train()
    layer.generator = torch.Generator().manual_seed(3)
    out = layer(images)
    f = (0.5 + 1.0 * draws(8, 3)).view(8, 1, 1, 1)   # in [1 - 0.5, 1 + 0.5]
    mean = images.mean(dim=(2, 3), keepdim=True)      # per image and channel
    torch.testing.assert_close(out, ((images - mean) * f + mean).clamp(0, 1))
    assert model("Conv2D(2, 3)", "RandomContrast(0.2)", "Flatten()", OUT).random_contrast_1.factor == (0.2, 0.2)


AUGMENTATIONS = ["RandomRotation(0.2)", "RandomTranslation(0.2, 0.2)", "RandomZoom(0.3)", "RandomFlip()",
                 "RandomContrast(0.5)"]


@pytest.mark.parametrize("layer", AUGMENTATIONS)
def test_identity_in_evaluation_and_reproducible_from_the_generator(layer):
    m = model(layer, "Flatten()", OUT)
    augment = next(iter(m.children()))
    x = torch.rand(16, 1, 28, 28)
    assert torch.equal(augment.eval()(x), x)
    augment.train()
    outputs = []
    for seed in (5, 5, 6):
        augment.generator = torch.Generator().manual_seed(seed)
        outputs.append(augment(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    assert not torch.equal(outputs[0], x)


# ---- Rescaling and Normalization


def test_rescaling_and_fixed_normalization_act_in_evaluation_too():
    m = model("Rescaling(2.0, offset=-1.0)", "Normalization(mean=0.1307, variance=0.09492561)", "Flatten()", OUT)
    m.eval()
    x = torch.rand(4, 784)   # no image layer: the model takes flat input, Normalization has 784 positions
    torch.testing.assert_close(m.normalization_1(m.rescaling_1(x)), (2 * x - 1 - 0.1307) / math.sqrt(0.09492561))
    assert "normalization_1.mean" not in m.state_dict()   # constants: the spec holds them
    inverse = model("Normalization(mean=(0.5,), variance=(4.0,), invert=True)", "Flatten()", OUT).normalization_1
    torch.testing.assert_close(inverse(x), x * 2 + 0.5)


@pytest.mark.parametrize("layers, shape, kept", [
    (["Normalization(input_shape=(28, 28, 1))", "Flatten()", OUT], (1, 28, 28), (0, 2, 3)),  # per channel
    (["Normalization(axis=None)", "Flatten()", OUT], (784,), (0, 1)),                      # one value
    (["Rescaling(3.0, offset=1.0)", "Normalization()", OUT], (784,), (0,)),        # per feature, after Rescaling
])
def test_normalization_adapts_to_the_training_images_like_numpy(mnist, layers, shape, kept):
    from mnistlab.engine.augment import adapt
    (x, _), _ = mnist
    x = torch.from_numpy(x[:3000].astype(np.float32) / 255).reshape(3000, *shape)
    m = model(*layers, shape=shape)
    adapt(m, x)
    norm = next(c for c in m.children() if isinstance(c, Normalization))
    seen = x.double().numpy() * (3 if "Rescaling" in layers[0] else 1) + (1 if "Rescaling" in layers[0] else 0)
    axes = tuple(a for a in kept if a < seen.ndim)
    np.testing.assert_allclose(norm.mean.numpy().ravel(), np.mean(seen, axis=axes).ravel(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(norm.variance.numpy().ravel(), np.var(seen, axis=axes).ravel(), rtol=1e-5, atol=1e-7)
    assert int(norm.count) == 3000 and "normalization_1.mean" in m.state_dict()


def test_summary_counts_like_keras():
    """Keras: preprocessing and augmentation layers have no weights; an adapted Normalization has
    mean, variance (one per kept position) and count, non-trainable: 2 x 9 + 1 = 19 for 9 features."""
    assert model("Normalization()", "Dense(10)", shape=(9,)).count_params() == (19 + 100, 100, 19)
    m = model("Normalization()", *AUGMENTATIONS, "Rescaling(0.5)", "Normalization(mean=0.0, variance=1.0)",
              "Flatten()", OUT)
    assert [r[3] for r in m.summary_rows()] == [3, 0, 0, 0, 0, 0, 0, 0, 0, 7850]
    assert m.count_params() == (7853, 7850, 3)
    assert model("Flatten()", "Normalization()", OUT).count_params()[2] == 2 * 784 + 1


ERRORS = [
    (["Flatten()", "RandomFlip()", OUT], 1, "layer 2 (random_flip_1): RandomFlip needs an image input (H, W, C) but "
                                            "gets (None, 784) after flatten_1; put RandomFlip layers before Flatten"),
    (["RandomRotation(0.1, input_shape=(784,))", "Flatten()", OUT], 0,
     "RandomRotation needs an image input (H, W, C) but gets (None, 784) from the model input"),
    (["RandomRotation(1.5)", "Flatten()", OUT], 0, "RandomRotation factor must be a number or a pair (lower, upper), "
                                                   "each in [-1, 1], got 1.5"),
    (["RandomZoom(-1.0)", "Flatten()", OUT], 0, "height_factor must be a number or a pair (lower, upper), each in (-1, 1]"),
    (["RandomTranslation(0.1, 0.1, fill_mode='mirror')", "Flatten()", OUT], 0,
     "fill_mode must be one of 'reflect', 'wrap', 'constant', 'nearest', got 'mirror'"),
    (["RandomFlip('diagonal')", "Flatten()", OUT], 0, "RandomFlip mode must be one of 'horizontal'"),
    (["RandomContrast(1.2)", "Flatten()", OUT], 0, "RandomContrast factor must be a number or a pair"),
    (["RandomRotation()", "Flatten()", OUT], 0, "RandomRotation needs argument 'factor'"),
    (["Normalization(mean=0.5)", "Flatten()", OUT], 0, "needs both mean= and variance="),
    (["Normalization(mean=(0.1, 0.2), variance=(1.0, 1.0))", "Conv2D(2, 3)", "Flatten()", OUT], 0,
     "mean has 2 values but its input has 1 channels or features"),
    (["Dense(64)", "Normalization()", OUT], 1, "Normalization without mean= and variance= adapts to the training "
                                               "images, so it must come before layers with weights like dense_1"),
    (["Normalization(axis=1)", "Flatten()", OUT], 0, "axis must be -1 (per channel or feature) or None"),
    (["Rescaling('x')", "Flatten()", OUT], 0, "Rescaling scale must be a number, got 'x'"),
]


@pytest.mark.parametrize("layers, index, message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_errors_name_the_layer(layers, index, message):
    with pytest.raises(LayerError) as info:
        model(*layers, shape=(784,) if "input_shape" in layers[0] else None)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert info.value.index == index


def test_study_error_names_file_model_and_layer(write_study):
    import mnistlab
    from mnistlab.errors import StudyError
    path = write_study('''\
        name = "s"
        [[model]]
        name = "cnn"
        layers = ["Conv2D(8, 3)", "Flatten()", "RandomRotation(0.1)", "Dense(10, activation='softmax')"]
        ''')
    with pytest.raises(StudyError) as info:
        mnistlab.load_study(path)
    assert str(info.value) == (f"{path}:4: model 'cnn': layer 3 'RandomRotation(0.1)': RandomRotation needs an image "
                               "input (H, W, C) but gets (None, 5408) after flatten_1; put RandomRotation layers "
                               "before Flatten")
