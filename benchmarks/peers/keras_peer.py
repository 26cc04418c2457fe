"""Keras 3 peer: the workload's model built and fitted the way the seed notebooks do it.

Run from the repository root with a Keras venv (see benchmarks/setup_peers.sh):

    KERAS_BACKEND=jax benchmarks/.venvs/keras-jax/bin/python -m benchmarks.peers.keras_peer \\
        --workload W1 --epochs 3 --threads 2
    KERAS_BACKEND=tensorflow benchmarks/.venvs/keras-tf/bin/python -m benchmarks.peers.keras_peer \\
        --workload S1 --epochs 10

`model.fit(..., validation_data=test)` with Keras defaults (jit_compile="auto", which Keras
resolves to XLA on JAX and to a plain tf.function for TensorFlow on CPU); each epoch is
timed by a callback from on_epoch_begin to on_epoch_end, so validation is inside the epoch.
Output: JSON lines, see benchmarks/peers/common.py.
"""

from __future__ import annotations

import os

from benchmarks.machine import EpochClock
from benchmarks.peers.common import main_loop, parse_args, pin_threads
from benchmarks.workloads import NUM_CLASSES, Run


def configure_backend(threads: int) -> str:
    """Set the thread knobs each backend reads at import time; returns the backend name."""
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "jax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault(
            "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}")
    return backend


def set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def backend_versions(backend: str) -> dict:
    import keras

    versions = {"keras": keras.__version__, "backend": backend}
    if backend == "jax":
        import jax
        versions["jax"] = jax.__version__
    elif backend == "tensorflow":
        import tensorflow as tf
        versions["tensorflow"] = tf.__version__
    return versions


# ---- the layer table → keras layers ----------------------------------------------------------

def _dense(keras, a):
    init = keras.initializers.RandomNormal(0.0, a["stddev"]) if "stddev" in a else "glorot_uniform"
    return keras.layers.Dense(a["units"], activation=a["activation"], kernel_initializer=init)


LAYER_BUILDERS = {
    "Dense": _dense,
    "Conv2D": lambda keras, a: keras.layers.Conv2D(a["filters"], a["kernel_size"],
                                                   padding=a["padding"], activation=a["activation"]),
    "MaxPooling2D": lambda keras, a: keras.layers.MaxPooling2D(a["pool_size"]),
    "BatchNormalization": lambda keras, a: keras.layers.BatchNormalization(
        momentum=a["momentum"], epsilon=a["epsilon"]),
    "Dropout": lambda keras, a: keras.layers.Dropout(a["rate"]),
    "Flatten": lambda keras, a: keras.layers.Flatten(),
}

OPTIMIZERS = {
    "adam": lambda keras, lr: keras.optimizers.Adam(learning_rate=lr),  # eps 1e-7 by default
    "sgd": lambda keras, lr: keras.optimizers.SGD(learning_rate=lr),
}


def build_model(run: Run):
    import keras

    layers = [LAYER_BUILDERS[layer.kind](keras, layer.args) for layer in run.model.layers]
    model = keras.Sequential([keras.Input(run.model.input_shape), *layers])
    model.compile(optimizer=OPTIMIZERS[run.optimizer](keras, run.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def prepare(run: Run, data):
    """Arrays as the seeds make them: float32 pixels / 255 in the model's input shape, one-hot."""
    import keras

    def x(images):
        return (images.astype("float32") / 255).reshape(len(images), *run.model.input_shape)

    def y(labels):
        return keras.utils.to_categorical(labels, NUM_CLASSES)

    return x(data.x_train), y(data.y_train), x(data.x_test), y(data.y_test)


def epoch_timer(on_epoch):
    """A callback that times each epoch, validation included, and hands on its logs."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.clock = EpochClock()
            self.clock.start()

        def on_epoch_end(self, epoch, logs=None):
            on_epoch(epoch + 1, self.clock.stop(), logs)

    return EpochTimer()


def train_run(run: Run, data, epochs: int, on_epoch) -> dict:
    import keras

    keras.utils.set_random_seed(run.seed)
    x_train, y_train, x_test, y_test = prepare(run, data)
    model = build_model(run)
    model.fit(x_train, y_train, batch_size=run.batch_size, epochs=epochs, verbose=0,
              validation_data=(x_test, y_test), callbacks=[epoch_timer(on_epoch)])
    jit = model.jit_compile  # what "auto" resolved to: XLA on JAX, off for TensorFlow on CPU
    keras.backend.clear_session()
    return {"jit_compile": bool(jit)}


def main() -> None:
    args = parse_args("keras-" + os.environ.get("KERAS_BACKEND", "jax").replace("tensorflow", "tf"))
    if (args.device, args.precision) != ("cpu", "fp32"):
        raise SystemExit(f"keras peers run on the CPU in fp32 only, not {args.device}/{args.precision}")
    pin_threads(args.threads)
    backend = configure_backend(args.threads)
    if backend == "tensorflow":
        set_tf_threads(args.threads)
    main_loop(args, backend_versions(backend), train_run)


if __name__ == "__main__":
    main()
