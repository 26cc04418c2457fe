"""Check every call a study names against the engine's registries, before anything trains.

Each distinct optimizer and architecture is checked once, however many runs share it: the model is
built on torch's 'meta' device (shapes and counts, no memory) and its training memory estimated for
each batch size it trains with (``memory.py``).

>>> check_study(spec.load_study("studies/quick.toml"))   # raises StudyError naming file:line, model, layer
"""

from __future__ import annotations

from ..data import DATASETS, split_index
from ..errors import DataError, LayerError, OptimizerError, StudyError
from ..spec import RunSpec, Study, did_you_mean, expand
from .callbacks import ReduceLROnPlateau, build_callbacks, monitors
from .layers import Sequential, build_model, input_shape
from .losses import check_output, parse_loss
from .memory import check_fits
from .optim import learning_rate, optimizer_defaults


def check_study(study: Study) -> None:
    """Raise a one-line StudyError for the first unknown dataset, optimizer or layer problem,
    or a model too large for this machine's memory."""
    if study.dataset not in DATASETS:
        raise StudyError(f"{study.where('dataset')}: dataset {study.dataset!r} is unknown; "
                         f"{did_you_mean(study.dataset, DATASETS)}")
    try:
        loss = parse_loss(study.train.loss)
    except StudyError as exc:
        raise StudyError(f"{study.where('loss', key=True)}: loss {study.train.loss!r}: {exc}") from None
    if isinstance(study.train.validation, float):
        images = DATASETS[study.dataset].shapes["x_train"][0]
        try:
            split_index(min(study.train.train_size or images, images), study.train.validation)
        except DataError as exc:
            raise StudyError(f"{study.where('validation', key=True)}: {exc}") from None
    optimizers: set[str] = set()
    models: dict[tuple[str, ...], Sequential] = {}
    sized: set[tuple[tuple[str, ...], int]] = set()
    for run in expand(study):
        if run.optimizer not in optimizers:
            try:
                optimizer_defaults(run.optimizer_call())
            except OptimizerError as exc:
                raise StudyError(f"{study.where('optimizer')}: model {run.model!r}: optimizer: {exc}") from None
            optimizers.add(run.optimizer)
        check_callbacks(study, run)
        if (run.layers, run.batch_size) in sized:
            continue
        sized.add((run.layers, run.batch_size))
        try:
            if run.layers not in models:
                calls = run.layer_calls()
                models[run.layers] = build_model(calls, input_shape(calls), device="meta")
                check_output(loss, models[run.layers].output_activation, len(calls) - 1, study.train.loss)
            check_fits(models[run.layers], run.batch_size)
        except LayerError as exc:
            raise _located(study, run, exc) from None


def _located(study: Study, run: RunSpec, exc: LayerError) -> StudyError:
    """``FILE:LINE: model 'm' [grid point]: layer N 'its text': message``."""
    entry = next(m for m in study.models if m.name == run.model)
    layer = entry.layers[exc.index] if exc.index is not None and exc.index < len(entry.layers) else None
    where = f"layer {exc.index + 1} {layer!r}: " if layer else ""
    point = f" [{run.point}]" if run.point else ""
    return StudyError(f"{study.where(layer or run.model)}: model {run.model!r}{point}: {where}{exc.message}")


def check_callbacks(study: Study, run: RunSpec) -> None:
    """Raise a one-line StudyError naming the file line, model and call of a callback that cannot work."""
    entry = next(m for m in study.models if m.name == run.model)
    texts = study.train.callbacks if entry.callbacks is None else entry.callbacks
    point = f" [{run.point}]" if run.point else ""
    for text, canonical in zip(texts, run.callbacks):
        where = f"{study.where(text)}: model {run.model!r}{point}: callback {text!r}"
        try:
            callback = build_callbacks([canonical])[0]
        except StudyError as exc:
            raise StudyError(f"{where}: {exc}") from None
        logged = monitors(run.validation)
        if callback.monitor not in logged:
            why = ' with validation = "none"' if run.validation == "none" else ""
            raise StudyError(f"{where}: monitors {callback.monitor!r}, which the run does not log{why}; "
                             f"it logs {', '.join(logged)}")
        if isinstance(callback, ReduceLROnPlateau) and learning_rate(run.optimizer_call()).scheduled:
            raise StudyError(f"{where}: the optimizer's learning rate follows a schedule, which "
                             "ReduceLROnPlateau cannot lower (Keras refuses it too); use one or the other")
