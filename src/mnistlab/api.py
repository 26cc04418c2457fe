"""The Python entry points: ``load_study`` and ``study`` check everything a study names; ``run`` trains
it and returns its :class:`~mnistlab.notebook.Results` (pandas DataFrames, the table, the report).

>>> study = load_study("studies/quick.toml")
>>> results = run(study)
>>> results.trained           # ids of the runs trained by this call
>>> results.table()           # the comparison table as a DataFrame (HTML in a notebook)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import spec as spec_module
from .engine.check import check_study
from .errors import StudyError
from .notebook import NotebookProgress, Results, in_notebook
from .runner.driver import Reporter
from .runner.executors import EXECUTORS
from .spec import Study
from .store import Store


def load_study(path: str | Path) -> Study:
    """Read a study file and check every layer, optimizer and dataset it names, before anything trains."""
    study = spec_module.load_study(path)
    check_study(study)
    return study


def study(name: str, *, models: Any = None, model: Any = None, train: Any = None, sweep: Any = None,
          repeats: int | None = None, dataset: str | None = None, seed: int | None = None,
          description: str | None = None, **fields: Any) -> Study:
    """A study from Python values: the schema, checks and one-line errors of a study file.

    ``models`` is a list of model tables (``{"name": ..., "layers": [...], "epochs": ...}``) or a dict
    from name to layers (or to such a table); ``train`` and ``sweep`` are the file's tables as dicts.
    Omitted values take the file's defaults; numpy arrays and scalars become plain lists and numbers.

    >>> s = study(name="widths", models={"mlp": ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]},
    ...           train={"epochs": 2, "train_size": 600}, sweep={"units": [32, 64]}, repeats=2)
    >>> s.to_toml("widths.toml")    # the same study as a file
    """
    if models is not None and model is not None:
        raise StudyError("<study>: model: give models= or model=, not both")
    given = {"name": name, "model": _model_tables(models if models is not None else model), "train": train,
             "sweep": sweep, "repeats": repeats, "dataset": dataset, "seed": seed, "description": description,
             **fields}
    built = spec_module.build_study({k: _plain(v) for k, v in given.items() if v is not None})
    check_study(built)
    # the TOML text is the study's source: the store keeps it and worker processes parse it
    return built.model_copy(update={"source": built.to_toml()})


def _model_tables(models: Any) -> Any:
    """``{name: layers}`` or ``{name: table}`` as the file's list of ``[[model]]`` tables."""
    if isinstance(models, Mapping):
        return [dict(_plain(entry), name=name) if isinstance(entry, (Mapping, BaseModel)) else
                {"name": name, "layers": entry} for name, entry in models.items()]
    return models  # a list of tables, or something the schema will name as wrong


def _plain(value: Any) -> Any:
    """TOML's kinds of value: dicts, lists and scalars (numpy arrays and scalars, tuples, models converted)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_none=True, exclude={"path", "source"})
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _plain(value.tolist()) if hasattr(value, "tolist") else value


def read_study(path: str | Path) -> Study:
    """A study file parsed and validated against the schema, its calls not yet checked (for its name)."""
    return spec_module.load_study(path)


def summaries(study: Study) -> list[tuple[str, str]]:
    """(label, Keras-style summary text) for each distinct architecture of the study, in study order."""
    from .engine.layers import build_model, input_shape
    seen, out = set(), []
    for spec in spec_module.expand(study):
        if spec.layers not in seen:
            seen.add(spec.layers)
            calls = spec.layer_calls()
            out.append((spec.label, build_model(calls, input_shape(calls)).summary()))
    return out


def fetch_data(name: str = "mnist", force: bool = False) -> Path:
    """Get a dataset into the verified cache (see ``mnistlab.data.fetch``)."""
    from . import data
    return data.fetch(name, force=force)


def data_info(name: str = "mnist") -> dict:
    from . import data
    return data.info(name)


def run(study: Study | str | Path, store: Store | str | None = None, reporter: Reporter | None = None,
        retry_failed: bool = False, group: bool = True, workers: int = 1, progress: bool | None = None) -> Results:
    """Train every run of the study that is not done yet; the store defaults to ``mnistlab.db`` beside it.

    Returns :class:`Results`: what this call did (``.trained``, ``.resumed``, ``.skipped``, ``.diverged``,
    ``.failed``) and the study's results as DataFrames. ``progress`` (default: only under Jupyter) shows
    a notebook progress bar. ``workers > 1`` trains in that many local processes (no progress reports).

    >>> results = run(study(name="s", models={"m": ["Dense(10, activation='softmax')"]}), store="s.db")
    >>> results.runs()          # one row per run
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if not isinstance(store, Store):
        store = Store.for_study(study.path or ".", store) if study.path else Store(store or "mnistlab.db")
    if workers > 1:
        outcome = EXECUTORS["processes"](study, store, retry_failed=retry_failed, group=group, workers=workers)
        return Results.of(outcome, store, study.name)
    bar = NotebookProgress() if reporter is None and (in_notebook() if progress is None else progress) else None
    try:
        outcome = EXECUTORS["inline"](study, store, reporter or bar, retry_failed=retry_failed, group=group)
    finally:
        if bar is not None:
            bar.close()
    return Results.of(outcome, store, study.name)


def load_model(store: Store, run_id: str):
    """The trained model of a run (evaluation mode), rebuilt from its spec and stored weights."""
    import torch

    from .engine.layers import build_model, input_shape
    from .spec import RunSpec
    full = store.resolve(run_id)
    row = store.runs(ids=[full], current=False)[0]
    loaded = store.load_arrays(full, "weights")
    if row["status"] != "done" or loaded is None:
        raise StudyError(f"run {full} has no trained weights (status {row['status']}); `mnistlab run` it first")
    spec = RunSpec.from_json({k: v for k, v in row["spec"].items() if k != "id"})
    calls = spec.layer_calls()
    model = build_model(calls, input_shape(calls))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in loaded[0].items()})
    return model.eval(), spec


def predict(store: Store, run_id: str, images: list[str | Path]) -> list[dict]:
    """Class probabilities for each image file (.png or .npy, 28x28): [{file, predicted, confidence, probabilities}]."""
    import numpy as np
    import torch

    from .images import read_image
    model, _ = load_model(store, run_id)
    batch = torch.from_numpy(np.stack([read_image(Path(p)) for p in images]))  # (N, 28, 28) in [0, 1]
    with torch.inference_mode():
        probabilities = torch.softmax(model(batch), dim=1) if model.output_activation == "softmax" else model(batch)
    return [{"file": str(p), "predicted": int(row.argmax()), "confidence": float(row.max()),
             "probabilities": [round(float(v), 6) for v in row]} for p, row in zip(images, probabilities)]


def export(store: Store, run_id: str, directory: str | Path) -> list[Path]:
    """Write a run's weights (safetensors), spec (JSON) and history (CSV) into ``directory``."""
    import csv
    import json

    from safetensors.numpy import save_file
    full = store.resolve(run_id)
    loaded = store.load_arrays(full, "weights")
    if loaded is None:
        raise StudyError(f"run {full} has no trained weights; `mnistlab run` it first")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    row = store.runs(ids=[full], current=False)[0]
    save_file(loaded[0], str(out / "weights.safetensors"), metadata={"run_id": full, "layers": "\n".join(row["spec"]["layers"])})
    (out / "spec.json").write_text(json.dumps(dict(row["spec"], id=full), indent=2))
    with open(out / "history.csv", "w", newline="") as handle:
        history = store.history(full)
        writer = csv.DictWriter(handle, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        writer.writerows(history)
    return [out / "weights.safetensors", out / "spec.json", out / "history.csv"]
