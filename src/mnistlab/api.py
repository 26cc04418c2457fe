"""The Python entry points: ``load_study`` checks everything a study names; ``run`` trains it.

>>> study = load_study("studies/quick.toml")
>>> run(study).trained        # ids of the runs trained by this call
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import numerics
from . import spec as spec_module
from .engine.check import check_study
from .engine.options import EngineOptions
from .errors import StudyError
from .runner.driver import Outcome, Reporter
from .runner.executors import EXECUTORS
from .runner.options import RunOptions
from .spec import Study
from .store import Store


def load_study(path: str | Path) -> Study:
    """Read a study file and check every layer, optimizer and dataset it names, before anything trains."""
    study = spec_module.load_study(path)
    check_study(study)
    return study


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
        options: RunOptions | None = None, engine: EngineOptions | None = None, **settings) -> Outcome:
    """Train every run of the study that is not done yet; the store defaults to ``mnistlab.db`` beside it.

    ``options`` (or the same fields as keywords: ``retry_failed=True``, ``group=False``, ``workers=2``)
    say how the study runs; ``engine`` how the engine computes (default: from the environment).
    ``workers > 1`` trains in that many local processes sharing the store (no progress reports);
    ``executor="ray"`` on a Ray cluster (``address=``; docs/DISTRIBUTED.md).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if not isinstance(store, Store):
        store = Store.for_study(study.path or ".", store) if study.path else Store(store or "mnistlab.db")
    options = replace(options or RunOptions(), **settings)
    if options.workers > 1 and options.executor == "inline":
        options = replace(options, executor="processes")
    engine = engine or EngineOptions.from_environment(settings=study.train)  # its [train] device and precision
    return EXECUTORS[options.executor](study, store, reporter, options, engine)


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
