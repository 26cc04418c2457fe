"""The benchmark workloads as plain data, read by every peer and by the harness.

Nothing here imports a framework: a model is a tuple of `Layer`s named and parametrised in the
Keras vocabulary of the seed notebooks, and each peer (keras, plain torch, mnistlab) turns the
table into its own model. The harness reads the same tables to count FLOPs.

    >>> w = WORKLOADS["W1"]
    >>> [layer.kind for layer in w.runs[0].model.layers]
    ['Dense', 'Dense', 'Dense']
    >>> count_params(w.runs[0].model)
    365250

Sources (``/work/shared/seeds``): W1, W2, S2 from 000_f3f0e2416279204c.txt, W3 from
001_07a9121b0c74b7ff.txt (model 1), S1 from 002_bad35e849adfb296.txt (task 2b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRAIN_EXAMPLES = 60_000  # one epoch = all of MNIST's training set...
TEST_EXAMPLES = 10_000  # ...then validation on all of the test set
NUM_CLASSES = 10


@dataclass(frozen=True)
class Layer:
    """One Keras layer: its class name and its Keras arguments.

    `stddev` on a Dense stands for ``kernel_initializer=RandomNormal(0, stddev)``; absent, the
    Keras default (glorot_uniform kernel, zero bias) applies.
    """

    kind: str  # Keras class name: Dense, Conv2D, MaxPooling2D, BatchNormalization, Dropout, Flatten
    args: dict = field(default_factory=dict)


def dense(units: int, activation: str, stddev: float | None = None) -> Layer:
    args = {"units": units, "activation": activation}
    if stddev is not None:
        args["stddev"] = stddev
    return Layer("Dense", args)


def conv(filters: int, kernel: int = 3, padding: str = "same", activation: str = "relu") -> Layer:
    return Layer("Conv2D", {"filters": filters, "kernel_size": kernel, "padding": padding,
                            "activation": activation})


BN = Layer("BatchNormalization", {"momentum": 0.99, "epsilon": 1e-3})  # Keras defaults
POOL = Layer("MaxPooling2D", {"pool_size": 2})
FLATTEN = Layer("Flatten")
SOFTMAX = dense(NUM_CLASSES, "softmax")


def dropout(rate: float) -> Layer:
    return Layer("Dropout", {"rate": rate})


@dataclass(frozen=True)
class Model:
    name: str
    input_shape: tuple[int, ...]  # Keras order, no batch: (784,) for MLPs, (28, 28, 1) for CNNs
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Run:
    """One training run: a model and how it is trained."""

    model: Model
    optimizer: str  # "adam" (Keras defaults: lr 1e-3, eps 1e-7) or "sgd"
    learning_rate: float
    batch_size: int
    epochs: int  # what the seed notebook trains for; the harness measures fewer and extrapolates
    repeat: int = 0  # index among identical repeats of the same configuration
    seed: int = 0

    @property
    def config(self) -> str:
        """The configuration label shared by all repeats of this run."""
        return f"{self.model.name} {self.optimizer} lr={self.learning_rate:g}"

    @property
    def label(self) -> str:
        return f"{self.config} #{self.repeat}"


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    runs: tuple[Run, ...]

    @property
    def is_sweep(self) -> bool:
        return len(self.runs) > 1


def mlp(name: str, widths_stddevs: list[tuple[int, float]], after_hidden: tuple[Layer, ...] = ()) -> Model:
    """A seed-000 MLP: Dense(w, relu, RandomNormal(0, sd)) per hidden layer, each followed by
    `after_hidden` (BatchNormalization, Dropout), then Dense(10, softmax)."""
    layers: list[Layer] = []
    for width, stddev in widths_stddevs:
        layers += [dense(width, "relu", stddev), *after_hidden]
    return Model(name, (784,), (*layers, SOFTMAX))


def _seed000_models() -> dict[str, Model]:
    # (width, RandomNormal stddev) per hidden layer, as printed in 000_f3f0e2416279204c.txt
    relu = {2: [(364, .074), (212, .097)],
            3: [(621, .056), (333, .077), (161, .111)],
            5: [(697, .053), (550, .060), (462, .065), (322, .078), (199, .100)]}
    batch = {2: [(532, .061), (384, .072)],
             3: [(589, .058), (423, .068), (272, .085)],
             5: [(667, .054), (579, .058), (499, .063), (349, .075), (205, .098)]}
    drop = {2: [(532, .061), (384, .072)],
            3: [(401, .070), (219, .095), (121, .128)],
            5: [(609, .057), (599, .057), (410, .069), (232, .092), (144, .117)]}
    models = {}
    for depth in (2, 3, 5):
        models[f"relu {depth}"] = mlp(f"relu {depth}", relu[depth])
        models[f"batch {depth}"] = mlp(f"batch {depth}", batch[depth], (BN,))
        models[f"drop {depth}"] = mlp(f"drop {depth}", drop[depth], (BN, dropout(0.5)))
    return models


SEED000 = _seed000_models()

# 001 model 1: 3x3 'same' ReLU convs; no dropout after Dense(512) in the notebook's code.
CNN_001_1 = Model("cnn 1", (28, 28, 1), (
    conv(16), conv(32), POOL, BN, dropout(0.25),
    conv(64), conv(128), POOL, dropout(0.25),
    FLATTEN, dense(512, "relu"), SOFTMAX,
))

# 002 task 2b: Flatten, Dense(100, relu), Dense(10, softmax), Keras default initializers.
MLP_002 = Model("mlp 100", (784,), (dense(100, "relu"), SOFTMAX))


def _adam(model: Model, batch_size: int = 128, epochs: int = 30, repeat: int = 0) -> Run:
    return Run(model, "adam", 1e-3, batch_size, epochs, repeat, seed=repeat)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("W1", "seed 000 'relu 2' MLP 364-212, Adam, batch 128", (_adam(SEED000["relu 2"]),)),
    Workload("W2", "seed 000 'drop 5' MLP 609-599-410-232-144 + BN + Dropout(0.5), Adam, batch 128",
             (_adam(SEED000["drop 5"]),)),
    Workload("W3", "seed 001 model 1 CNN 16-32-pool-BN-64-128-pool, dense 512, Adam, batch 140",
             (_adam(CNN_001_1, batch_size=140, epochs=20),)),
    Workload("S1", "seed 002 task 2b: MLP 784-100-10, SGD lr {0.001,0.01,0.1,1} x 3 repeats, 10 epochs",
             tuple(Run(MLP_002, "sgd", lr, 128, 10, rep, seed=rep)
                   for lr in (0.001, 0.01, 0.1, 1.0) for rep in range(3))),
    Workload("S2", "seed 000: 9 MLPs x 3 repeats, 30 epochs, Adam, batch 128",
             tuple(_adam(m, repeat=rep) for m in SEED000.values() for rep in range(3))),
)}


def select_runs(workload: Workload, repeats: int | None = None) -> tuple[Run, ...]:
    """The runs to measure: all of them, or only the first `repeats` repeats of each config."""
    return tuple(r for r in workload.runs if repeats is None or r.repeat < repeats)


# ---- shapes and work, for parameter counts and the FLOP limit --------------------------------

def trace(model: Model) -> list[tuple[Layer, tuple[int, ...], tuple[int, ...], int, int]]:
    """Per layer: (layer, input shape, output shape, parameters, multiply-accumulates per example)."""
    shape, rows = model.input_shape, []
    for layer in model.layers:
        out, params, macs = _SHAPE_RULES[layer.kind](layer.args, shape)
        rows.append((layer, shape, out, params, macs))
        shape = out
    return rows


def _dense_rule(a, shape):
    (n_in,) = shape
    return (a["units"],), n_in * a["units"] + a["units"], n_in * a["units"]


def _conv_rule(a, shape):
    h, w, c = shape
    k, f = a["kernel_size"], a["filters"]
    if a["padding"] == "valid":
        h, w = h - k + 1, w - k + 1
    return (h, w, f), k * k * c * f + f, h * w * k * k * c * f


def _bn_rule(a, shape):
    return shape, 4 * shape[-1], 0  # gamma, beta, moving mean, moving variance


_SHAPE_RULES = {
    "Dense": _dense_rule,
    "Conv2D": _conv_rule,
    "MaxPooling2D": lambda a, s: ((s[0] // a["pool_size"], s[1] // a["pool_size"], s[2]), 0, 0),
    "BatchNormalization": _bn_rule,
    "Dropout": lambda a, s: (s, 0, 0),
    "Flatten": lambda a, s: ((_prod(s),), 0, 0),
}


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def count_params(model: Model) -> int:
    """Parameter count as Keras' model.summary() prints it (BatchNorm's moving stats included).

    The counts the seed notebooks printed:

    >>> [count_params(SEED000[m]) for m in ("relu 2", "relu 3", "relu 5", "batch 2")]
    [365250, 750005, 1400970, 629806]
    >>> count_params(CNN_001_1)
    3314186
    """
    return sum(row[3] for row in trace(model))


def epoch_flops(run: Run) -> float:
    """Matmul/conv FLOPs of one epoch: training on 60k (forward 2*MACs, backward twice the
    forward, minus the input gradient of the first layer, which nothing needs) plus the
    validation forward pass on 10k. Elementwise work (activations, BN, Adam) is not counted."""
    macs = [row[4] for row in trace(run.model) if row[4]]
    forward = 2 * sum(macs)
    train = forward + 2 * forward - 2 * macs[0]
    return TRAIN_EXAMPLES * train + TEST_EXAMPLES * forward
