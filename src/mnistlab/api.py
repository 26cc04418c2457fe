"""The Python entry points: ``load_study`` and ``study`` check everything a study names; ``run`` trains
it and returns its :class:`~mnistlab.notebook.Results` (pandas DataFrames, the table, the report).

>>> study = load_study("studies/quick.toml")
>>> results = run(study)
>>> results.trained           # ids of the runs trained by this call
>>> results.table()           # the comparison table as a DataFrame (HTML in a notebook)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import numerics
from . import spec as spec_module
from .engine.check import check_study
from .engine.options import EngineOptions
from .errors import ImageError, ReportError, StudyError
from .notebook import NotebookProgress, Results, in_notebook
from .runner.driver import Reporter
from .runner.executors import EXECUTORS
from .runner.options import RunOptions
from .runner.planning import chosen
from .spec import Study
from .store import Store


def load_study(path: str | Path, yes: bool = False) -> Study:
    """Read a study file and check every layer, optimizer and dataset it names, before anything trains.

    A study of more than ``mnistlab.spec.MAX_RUNS`` (10,000) runs is refused unless ``yes=True``;
    a model that would not fit in memory is refused with its size.
    """
    study = spec_module.load_study(path, yes=yes)
    check_study(study)
    return study


def study(name: str, *, models: Any = None, model: Any = None, train: Any = None, sweep: Any = None,
          repeats: int | None = None, dataset: str | None = None, seed: int | None = None,
          description: str | None = None, yes: bool = False, **fields: Any) -> Study:
    """A study from Python values: the schema, checks and one-line errors of a study file.

    ``models`` is a list of model tables (``{"name": ..., "layers": [...], "epochs": ...}``) or a dict
    from name to layers (or to such a table); ``train`` and ``sweep`` are the file's tables as dicts.
    Omitted values take the file's defaults; numpy arrays and scalars become plain lists and numbers.
    ``yes`` accepts more than 10,000 runs, as for a file.

    >>> s = study(name="widths", models={"mlp": ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]},
    ...           train={"epochs": 2, "train_size": 600}, sweep={"units": [32, 64]}, repeats=2)
    >>> s.to_toml("widths.toml")    # the same study as a file
    """
    if models is not None and model is not None:
        raise StudyError("<study>: model: give models= or model=, not both")
    given = {"name": name, "model": _model_tables(models if models is not None else model), "train": train,
             "sweep": sweep, "repeats": repeats, "dataset": dataset, "seed": seed, "description": description,
             **fields}
    built = spec_module.build_study({k: _plain(v) for k, v in given.items() if v is not None}, yes=yes)
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
    """A study file parsed and validated against the schema, its calls not yet checked (for its name).

    Never refused for its run count: commands that only read the store use it.
    """
    return spec_module.load_study(path, yes=True)


def summaries(study: Study) -> list[tuple[str, str]]:
    """(label, Keras-style summary text) for each distinct architecture of the study, in study order.

    Models are built on torch's 'meta' device: shapes and counts only, nothing allocated.
    """
    from .engine.layers import build_model, input_shape
    seen, out = set(), []
    for spec in spec_module.expand(study):
        if spec.layers not in seen:
            seen.add(spec.layers)
            calls = spec.layer_calls()
            out.append((spec.label, build_model(calls, input_shape(calls), device="meta").summary()))
    return out


def fetch_data(name: str = "mnist", force: bool = False) -> Path:
    """Get a dataset into the verified cache (see ``mnistlab.data.fetch``)."""
    from . import data
    return data.fetch(name, force=force)


def data_info(name: str = "mnist") -> dict:
    from . import data
    return data.info(name)


def dataset_names() -> list[str]:
    """The registered datasets: ``['mnist', 'fashion_mnist']``."""
    from . import data
    return data.DATASETS.names()


def class_names() -> dict[str, list[str]]:
    """Each dataset's class names by label, for reports: ``class_names()['fashion_mnist'][9] == 'Ankle boot'``."""
    from . import data
    return {name: list(data.DATASETS[name].classes) for name in data.DATASETS.names()}


def run(study: Study | str | Path, store: Store | str | None = None, reporter: Reporter | None = None,
        options: RunOptions | None = None, engine: EngineOptions | None = None, yes: bool = False,
        progress: bool | None = None, **settings) -> Results:
    """Train every run of the study that is not done yet; the store defaults to ``mnistlab.db`` beside it.

    ``options`` (or the same fields as keywords: ``retry_failed=True``, ``group=False``, ``workers=2``)
    say how the study runs; ``engine`` how the engine computes (default: from the environment).
    ``workers > 1`` trains in that many local processes sharing the store (no progress, only notes);
    ``executor="ray"`` on a Ray cluster (``address=``; docs/DISTRIBUTED.md).
    ``models=["model 3*"]`` trains only the runs of the models named (exact names or globs).
    ``yes`` accepts a study file of more than 10,000 runs (as in :func:`load_study`).
    Returns :class:`Results`: what this call did (``.trained``, ``.resumed``, ``.skipped``, ``.diverged``,
    ``.failed``) and the study's results as DataFrames. ``progress`` (default: only under Jupyter) shows
    a notebook progress bar.

    >>> results = run(study(name="s", models={"m": ["Dense(10, activation='softmax')"]}), store="s.db")
    >>> results.runs()          # one row per run
    """
    if not isinstance(study, Study):
        study = load_study(study, yes=yes)
    store = _open_store(study, store)
    options = replace(options or RunOptions(), **settings)
    if options.workers > 1 and options.executor == "inline":
        options = replace(options, executor="processes")
    engine = engine or EngineOptions.from_environment(settings=study.train)  # its [train] device and precision
    if options.models:  # a model named wrong: said before any worker or Ray task starts
        chosen(spec_module.expand(study), options.models)
    inline = options.executor == "inline"
    bar = NotebookProgress() if inline and reporter is None and (in_notebook() if progress is None else progress) else None
    try:
        outcome = EXECUTORS[options.executor](study, store, reporter or bar, options, engine)
    finally:
        if bar is not None:
            bar.close()
    return Results.of(outcome, store, study.name)


def plan(study: Study | str | Path, store: Store | str | None = None, group: bool = True,
         retry_failed: bool = False, calibrate: bool = True, workers: int = 1, threads: int | None = None,
         models: str | tuple[str, ...] = ()):
    """What ``run`` would train and what it will cost (:class:`mnistlab.runner.estimate.Plan`), in
    ``workers`` local processes (of ``threads`` torch threads each, where given), of the runs of
    ``models`` (names or globs, as ``run``'s) where given; ``calibrate=False``
    times nothing (shapes the store has not measured get 0 seconds).

    >>> plan("studies/quick.toml").line()
    """
    from .runner.estimate import estimate
    if not isinstance(study, Study):
        study = load_study(study)
    return estimate(study, _open_store(study, store), group=group, retry_failed=retry_failed, calibrate=calibrate,
                    workers=workers, threads=threads, models=models)


def _open_store(study: Study, store: Store | str | None) -> Store:
    if isinstance(store, Store):
        return store
    return Store.for_study(study.path or ".", store) if study.path else Store(store or "mnistlab.db")


def load_model(store: Store, run_id: str):
    """The trained model of a run (evaluation mode), rebuilt from its spec and stored weights."""
    import torch

    from .engine.layers import Flatten, build_model, input_shape
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
    if numerics.of(row["environment"]) < 2:  # trained when Flatten took torch's (C, H, W) order
        for module in model.modules():
            if isinstance(module, Flatten):
                module.keras_order = False
    return model.eval(), spec


def predict(store: Store, run_id: str, images: list[str | Path]) -> list[dict]:
    """Class probabilities for image files (.png or .npy, resized to 28x28): [{file, predicted, confidence,
    probabilities}], probabilities the softmax of the model's outputs, as its training loss took them.

    >>> predict(Store("mnistlab.db"), "3f2a", ["seven.png"])[0]["predicted"]
    7
    """
    import numpy as np
    import torch

    from .images import read_image
    if not images:
        raise ImageError("no images given; name one or more .png or .npy files")
    batch = torch.from_numpy(np.stack([read_image(Path(p)) for p in images]))  # (N, 28, 28) in [0, 1]
    model, _ = load_model(store, run_id)  # after every file is read: a bad one fails fast
    with torch.inference_mode():  # the engine trains every model's output as logits (cross-entropy)
        probabilities = torch.softmax(model(batch), dim=1)
    for p, row in zip(images, probabilities):
        if not torch.isfinite(row).all():
            raise StudyError(f"run {run_id}: the model's outputs for {p} are not finite numbers; its weights "
                             "are damaged or overflowed")
    return [{"file": str(p), "predicted": int(row.argmax()), "confidence": float(row.max()),
             "probabilities": [round(float(v), 6) for v in row]} for p, row in zip(images, probabilities)]


EXPORT_FORMATS = ("safetensors", "onnx")


def export(store: Store, run_id: str, directory: str | Path, format: str = "safetensors",
           force: bool = False) -> list[Path]:
    """Write a run's weights, spec (JSON) and history (CSV) into ``directory``; return the paths.

    ``format``: ``"safetensors"`` (weights.safetensors) or ``"onnx"`` (model.onnx, see
    ``mnistlab.engine.onnx``). A folder that already holds files is refused unless ``force``.

    >>> export(Store("mnistlab.db"), "3f2a", "out", format="onnx")
    [PosixPath('out/model.onnx'), PosixPath('out/spec.json'), PosixPath('out/history.csv')]
    """
    if format not in EXPORT_FORMATS:
        raise ReportError(f"--format {format!r} is unknown; use {' or '.join(EXPORT_FORMATS)}")
    if format == "onnx":
        from .engine.onnx import require
        require()
    full = store.resolve(run_id)
    loaded = store.load_arrays(full, "weights")
    if loaded is None:
        raise StudyError(f"run {full} has no trained weights; `mnistlab run` it first")
    from safetensors import SafetensorError
    out = _export_folder(Path(directory), force)
    row = store.runs(ids=[full], current=False)[0]
    try:
        if format == "onnx":
            from .engine.onnx import write_onnx
            model, spec = load_model(store, full)
            first = write_onnx(model, spec.layer_calls(), out / "model.onnx",
                               metadata={"run_id": full, "layers": "\n".join(row["spec"]["layers"])})
        else:
            from safetensors.numpy import save_file
            first = out / "weights.safetensors"
            save_file(loaded[0], str(first), metadata={"run_id": full, "layers": "\n".join(row["spec"]["layers"])})
        (out / "spec.json").write_text(json.dumps(dict(row["spec"], id=full), indent=2))
        history = store.history(full)
        for entry, lr in zip(history, store.load_json(full, "lr") or []):  # the learning rate of each epoch
            entry["lr"] = lr
        _write_history(history, out / "history.csv")
    except (OSError, SafetensorError) as exc:  # safetensors' I/O errors are not OSErrors
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())
        raise ReportError(f"{out}: cannot write the export ({reason}); choose another -o folder") from None
    return [first, out / "spec.json", out / "history.csv"]


def _export_folder(out: Path, force: bool) -> Path:
    """``out``, created if needed, or a one-line ReportError: a file, under a file, not writable, not empty."""
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise ReportError(f"{out}: {existing} is a file; give -o a folder to write the export into")
    try:
        if existing == out and any(out.iterdir()) and not force:
            raise ReportError(f"{out} already holds files; pass --force to overwrite the export there, "
                              "or choose another -o folder")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # PermissionError, read-only file system, ...
        raise ReportError(f"{out}: cannot create the folder ({exc.strerror or exc}); "
                          "choose another -o folder") from None
    if not os.access(out, os.W_OK):
        raise ReportError(f"{out}: the folder is not writable; choose another -o folder")
    return out


def _write_history(history: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        writer.writerows(history)
