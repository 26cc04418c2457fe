"""Every model of the five seed notebooks (/work/shared/seeds), in Keras call syntax, as declared there.

``SEED_MODELS[name]`` is the list of layer strings; ``SEED_TOTALS[name]`` the (total, trainable,
non-trainable) parameter counts the notebook printed (only where it printed them);
``SEED_LAYER_PARAMS[name]`` the per-layer "Param #" column the notebook printed, in order (a prefix
where the printed summary was cut off). Transcription choices:

* ``input_shape=input_shape`` / ``(input_dim,)`` are written out: (28, 28, 1) and (784,).
* ``regularizers.l2(x)`` is written ``l2(x)``; ``activation=tf.nn.softmax`` is written ``'softmax'``.
* OCR damage in the exports (``input shape``, ``pool size``, ``kernel initializer= he normal``) is read
  as the Keras argument it obviously is.
* 003 model 2 without BN: its code cell is lost in the export; its summary (64-128-256, no BN) and
  the BN variant's code give the layers and the RandomNormal stddevs (0.050, 0.176, 0.125).
* 003 model 1 with BN: the export shows ``Dropout(0.25)`` twice in the code but the printed summary
  has one BatchNormalization and one Dropout after the first Dense; the summary is followed.
* 002 sweeps (learning rate, width, noise stddev, L2 factor) differ in one value: the varied
  value is in the name, e.g. ``"002 task 3b l2 0.01"``.
"""

from __future__ import annotations


def _rn(stddev: float) -> str:
    return f"kernel_initializer=RandomNormal(mean=0.0, stddev={stddev}, seed=None)"


def _mlp_000(widths: list[int], stddevs: list[float], bn: bool, drop: bool) -> list[str]:
    """Seed 000: Dense(relu, RandomNormal) hidden layers, each optionally followed by BN and Dropout(0.5)."""
    layers = []
    for i, (width, stddev) in enumerate(zip(widths, stddevs)):
        first = ", input_shape=(784,)" if i == 0 else ""
        layers.append(f"Dense({width}, activation='relu'{first}, {_rn(stddev)})")
        layers += ["BatchNormalization()"] * bn + ["Dropout(0.5)"] * drop
    return layers + ["Dense(10, activation='softmax')"]


_SAME_3x3 = "kernel_size=(3,3), strides=(1,1), padding='same', activation='relu'"
_SAME_5x5 = "kernel_size=(5,5), strides=(1,1), padding='same', activation='relu', kernel_initializer=he_normal(seed=None)"
_HE = "kernel_initializer='he_normal'"

SEED_MODELS: dict[str, list[str]] = {
    # ---- 000: MLP depth x BatchNorm x Dropout; Adam, batch 128, 30 epochs
    "000 relu 2": _mlp_000([364, 212], [0.074, 0.097], bn=False, drop=False),
    "000 relu 3": _mlp_000([621, 333, 161], [0.056, 0.077, 0.111], bn=False, drop=False),
    "000 relu 5": _mlp_000([697, 550, 462, 322, 199], [0.053, 0.060, 0.065, 0.078, 0.100], bn=False, drop=False),
    "000 batch 2": _mlp_000([532, 384], [0.061, 0.072], bn=True, drop=False),
    "000 batch 3": _mlp_000([589, 423, 272], [0.058, 0.068, 0.085], bn=True, drop=False),
    "000 batch 5": _mlp_000([667, 579, 499, 349, 205], [0.054, 0.058, 0.063, 0.075, 0.098], bn=True, drop=False),
    "000 drop 2": _mlp_000([532, 384], [0.061, 0.072], bn=True, drop=True),
    "000 drop 3": _mlp_000([401, 219, 121], [0.070, 0.095, 0.128], bn=True, drop=True),
    "000 drop 5": _mlp_000([609, 599, 410, 232, 144], [0.057, 0.057, 0.069, 0.092, 0.117], bn=True, drop=True),
    # ---- 001: CNNs; batch 140, 20 epochs
    "001 model 1": [  # Adam
        f"Conv2D(filters=16, {_SAME_3x3}, input_shape=(28, 28, 1))",
        f"Conv2D(filters=32, {_SAME_3x3})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "BatchNormalization()",
        "Dropout(0.25)",
        f"Conv2D(filters=64, {_SAME_3x3})",
        f"Conv2D(filters=128, {_SAME_3x3})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Dropout(0.25)",
        "Flatten()",
        "Dense(units=512, activation='relu')",
        "Dense(units=10, activation='softmax')",
    ],
    "001 model 2": [  # Adadelta(); model 3 is the same with SGD()
        "Conv2D(32, kernel_size=(3, 3), activation='sigmoid', input_shape=(28, 28, 1))",
        "Conv2D(64, (3, 3), activation='sigmoid')",
        "MaxPooling2D(pool_size=(2, 2))",
        "Dropout(0.25)",
        "Flatten()",
        "Dense(128, activation='sigmoid')",
        "Dropout(0.5)",
        "Dense(10, activation='softmax')",
    ],
    "001 model 4": [  # Adam
        f"Conv2D(filters=16, {_SAME_5x5}, input_shape=(28, 28, 1))",
        f"Conv2D(filters=32, {_SAME_5x5})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "BatchNormalization()",
        "Dropout(0.25)",
        f"Conv2D(filters=64, {_SAME_5x5})",
        f"Conv2D(filters=64, {_SAME_5x5})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Dropout(0.25)",
        f"Conv2D(filters=128, {_SAME_5x5})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Dropout(0.25)",
        f"Conv2D(filters=256, {_SAME_5x5})",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Flatten()",
        "Dense(units=512, activation='relu', kernel_initializer=he_normal(seed=None))",
        "BatchNormalization()",
        "Dropout(0.25)",
        "Dense(units=64, activation='relu', kernel_initializer=he_normal(seed=None))",
        "BatchNormalization()",
        "Dropout(0.25)",
        "Dense(units=10, activation='softmax')",
    ],
    # ---- 002: plain SGD; Flatten first on (28, 28, 1) images, i.e. a flat 784 input
    "002 task 1": ["Flatten()", "Dense(125, activation='relu')", "Dense(100, activation='relu')",
                   "Dense(50, activation='relu')", "Dense(10, activation='softmax')"],
    "002 task 2": ["Flatten()", "Dense(100, activation='relu')", "Dense(10, activation='softmax')"],  # 2a and 2b
    "002 task 2c": ["Flatten()", "Dense(1000, activation='relu')", "Dense(10, activation='softmax')"],
    **{f"002 task 3a noise {s}": [f"GaussianNoise({s})", "Flatten()", "Dense(100, activation='relu')",
                                  "Dense(10, activation='softmax')"] for s in (0.1, 1, 10)},
    **{f"002 task 3b l2 {x}": ["GaussianNoise(0.1)", "Flatten()",
                               f"Dense(100, activation='relu', kernel_regularizer=l2({x}))",
                               "Dense(10, activation='softmax')"] for x in (0.001, 0.01, 0.1)},
    "002 task 4": [  # SGD(lr=0.2), batch 28; input_shape on non-first layers is ignored, as by Keras
        "GaussianNoise(0.1)",
        "Conv2D(64, kernel_size=3, activation='relu', input_shape=(28,28,1))",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Conv2D(64, kernel_size=3, activation='relu', input_shape=(28,28,1))",
        "MaxPooling2D(pool_size=(2,2), strides=2)",
        "Flatten()",
        "Dense(100, activation='relu', kernel_regularizer=l2(0.0001))",
        "Dense(50, activation='relu', kernel_regularizer=l2(0.0001))",
        "Dense(10, activation='softmax')",
    ],
    # ---- 003: small MLPs, RandomNormal with He-style stddev; Adam, batch 128, 15 epochs
    "003 model 1": [
        "Dense(64, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.050))",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "Dense(10, activation='softmax')",
    ],
    "003 model 1 bn": [
        "Dense(64, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.050))",
        "BatchNormalization()",
        "Dropout(0.25)",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "Dense(10, activation='softmax')",
    ],
    "003 model 2": [
        "Dense(64, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.050))",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "Dense(256, activation='relu', kernel_initializer=RandomNormal(stddev=0.125))",
        "Dense(10, activation='softmax')",
    ],
    "003 model 2 bn": [
        "Dense(64, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.050))",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "BatchNormalization()",
        "Dropout(0.25)",
        "Dense(256, activation='relu', kernel_initializer=RandomNormal(stddev=0.125))",
        "BatchNormalization()",
        "Dropout(0.5)",
        "Dense(10, activation='softmax')",
    ],
    "003 model 3": [
        "Dense(32, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.125))",
        "Dense(64, activation='relu', kernel_initializer=RandomNormal(stddev=0.25))",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "Dense(256, activation='relu', kernel_initializer=RandomNormal(stddev=0.125))",
        "Dense(512, activation='relu', kernel_initializer=RandomNormal(stddev=0.088))",
        "Dense(10, activation='softmax')",
    ],
    "003 model 3 bn": [
        "Dense(32, activation='relu', input_shape=(784,), kernel_initializer=RandomNormal(stddev=0.125))",
        "Dense(64, activation='relu', kernel_initializer=RandomNormal(stddev=0.25))",
        "BatchNormalization()",
        "Dropout(0.25)",
        "Dense(128, activation='relu', kernel_initializer=RandomNormal(stddev=0.176))",
        "Dense(256, activation='relu', kernel_initializer=RandomNormal(stddev=0.125))",
        "BatchNormalization()",
        "Dropout(0.5)",
        "Dense(512, activation='relu', kernel_initializer=RandomNormal(stddev=0.088))",
        "Dense(10, activation='softmax')",
    ],
    # ---- 004: CNN kernel sizes; Adadelta(), batch 128, 12 epochs
    "004 model 1": [
        f"Conv2D(64, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1), {_HE})",
        f"Conv2D(128, (3, 3), activation='relu', {_HE})",
        "MaxPooling2D(pool_size=(2, 2))",
        "Dropout(0.5)",
        "Flatten()",
        f"Dense(128, activation='relu', {_HE})",
        "Dropout(0.5)",
        "Dense(10, activation='softmax', kernel_initializer='glorot_normal')",
    ],
    "004 model 2": [
        f"Conv2D(64, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1), {_HE})",
        f"Conv2D(128, (5, 5), activation='relu', {_HE})",
        "MaxPooling2D(pool_size=(2, 2))",
        "Dropout(0.5)",
        "Flatten()",
        f"Dense(256, activation='relu', {_HE})",
        "BatchNormalization()",
        "Dropout(0.5)",
        "Dense(10, activation='softmax', kernel_initializer='glorot_normal')",
    ],
    "004 model 3": [
        f"Conv2D(64, kernel_size=(5, 5), activation='relu', input_shape=(28, 28, 1), {_HE})",
        f"Conv2D(128, (7, 7), activation='relu', {_HE})",
        "MaxPooling2D(pool_size=(2, 2))",
        "Dropout(0.5)",
        "Flatten()",
        f"Dense(256, activation='relu', {_HE})",
        "BatchNormalization()",
        "Dropout(0.5)",
        f"Dense(128, activation='relu', {_HE})",
        "BatchNormalization()",
        "Dropout(0.5)",
        "Dense(10, activation='softmax', kernel_initializer='glorot_normal')",
    ],
}

# (total, trainable, non-trainable) exactly as printed by the notebooks
SEED_TOTALS: dict[str, tuple[int, int, int]] = {
    "000 relu 2": (365_250, 365_250, 0),
    "000 relu 3": (750_005, 750_005, 0),
    "000 relu 5": (1_400_970, 1_400_970, 0),
    "000 batch 2": (629_806, 627_974, 1_832),
    "001 model 1": (3_314_186, 3_314_122, 64),
    "001 model 2": (1_199_882, 1_199_882, 0),
    "001 model 4": (1_358_858, 1_357_642, 1_216),
    "002 task 1": (116_285, 116_285, 0),
    "003 model 1": (59_850, 59_850, 0),
    "003 model 1 bn": (60_106, 59_978, 128),
    "003 model 2": (94_154, 94_154, 0),
    "003 model 2 bn": (95_690, 94_922, 768),
    "003 model 3": (205_290, 205_290, 0),
    "003 model 3 bn": (206_570, 205_930, 640),
    "004 model 1": (2_435_210, 2_435_210, 0),
    "004 model 2": (4_174_346, 4_173_834, 512),
    "004 model 3": (3_093_386, 3_092_618, 768),
}

# The "Param #" column as printed, in layer order; a prefix where the printout was cut off.
SEED_LAYER_PARAMS: dict[str, list[int]] = {
    "000 relu 2": [285740, 77380, 2130],
    "000 relu 3": [487485, 207126, 53774, 1620],
    "000 relu 5": [547145, 383900, 254562, 149086, 64277, 2000],
    "000 batch 2": [417620, 2128, 204672, 1536, 3850],
    "000 batch 3": [462365, 2356, 249570, 1692, 115328, 1088, 2730],
    "000 batch 5": [523595, 2668, 386772, 2316, 289420, 1996, 174500],
    "000 drop 2": [417620, 2128, 0, 204672, 1536, 0, 3850],
    "000 drop 3": [314785, 1604, 0, 88038, 876, 0, 26620],
    "000 drop 5": [478065, 2436, 0, 365390, 2396, 0, 246000],
    "001 model 1": [160, 4640, 0, 128, 0, 18496, 73856, 0, 0, 0, 3211776, 5130],
    "001 model 2": [320, 18496, 0, 0, 0, 1179776, 0, 1290],
    "001 model 4": [416, 12832, 0, 128, 0, 51264, 102464, 0, 0, 204928, 0, 0, 819456, 0, 0,
                    131584, 2048, 0, 32832, 256, 0, 650],
    "002 task 1": [0, 98125, 12600, 5050, 510],
    "002 task 4": [0, 640, 0, 36928, 0, 0],
    "003 model 1": [50240, 8320, 1290],
    "003 model 1 bn": [50240, 256, 0, 8320, 1290],
    "003 model 2": [50240, 8320, 33024, 2570],
    "003 model 2 bn": [50240, 8320, 512, 0, 33024, 1024, 0, 2570],
    "003 model 3": [25120, 2112, 8320, 33024, 131584, 5130],
    "003 model 3 bn": [25120, 2112, 256, 0, 8320, 33024, 1024, 0, 131584, 5130],
    "004 model 1": [640, 73856, 0, 0, 0, 2359424, 0, 1290],
    "004 model 2": [640, 204928, 0, 0, 0, 3965184, 1024, 0, 2570],
    "004 model 3": [1664, 401536, 0, 0, 0, 2654464, 1024, 0, 32896, 512, 0, 1290],
}
SEED_MODELS["001 model 3"] = SEED_MODELS["001 model 2"]   # same network, trained with SGD() instead
