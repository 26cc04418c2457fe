"""Check every call a study names against the engine's registries, before anything trains.

>>> check_study(spec.load_study("studies/quick.toml"))   # raises StudyError naming file:line, model, layer
"""

from __future__ import annotations

from ..data import DATASETS
from ..errors import LayerError, OptimizerError, StudyError
from ..spec import Study, did_you_mean, expand
from .layers import check_model, input_shape
from .losses import check_output, parse_loss
from .optim import optimizer_defaults


def check_study(study: Study) -> None:
    """Raise a one-line StudyError for the first unknown dataset, optimizer or layer problem."""
    if study.dataset not in DATASETS:
        raise StudyError(f"{study.where('dataset')}: dataset {study.dataset!r} is unknown; "
                         f"{did_you_mean(study.dataset, DATASETS)}")
    try:
        loss = parse_loss(study.train.loss)
    except StudyError as exc:
        raise StudyError(f"{study.where('loss', key=True)}: loss {study.train.loss!r}: {exc}") from None
    checked: set[tuple[str, ...]] = set()
    for run in expand(study):
        try:
            optimizer_defaults(run.optimizer_call())
        except OptimizerError as exc:
            raise StudyError(f"{study.where('optimizer')}: model {run.model!r}: optimizer: {exc}") from None
        if run.layers in checked:
            continue
        checked.add(run.layers)
        entry = next(m for m in study.models if m.name == run.model)
        try:
            calls = run.layer_calls()
            model = check_model(calls, input_shape(calls))
            check_output(loss, model.output_activation, len(calls) - 1, study.train.loss)
        except LayerError as exc:
            layer = entry.layers[exc.index] if exc.index is not None and exc.index < len(entry.layers) else None
            where = f"layer {exc.index + 1} {layer!r}: " if layer else ""
            point = f" [{run.point}]" if run.point else ""
            raise StudyError(f"{study.where(layer or run.model)}: model {run.model!r}{point}: "
                             f"{where}{exc.message}") from None
