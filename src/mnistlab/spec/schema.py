"""Study files: TOML in the Keras vocabulary -> validated :class:`Study` -> frozen :class:`RunSpec` s.

A study names a dataset, training settings, models (layer strings in Keras call syntax), an
optional sweep grid and a repeat count::

    name = "quick"
    [train]
    epochs = 2
    optimizer = "adam"
    [[model]]
    name = "mlp"
    layers = ["Dense({units}, activation='relu')", "Dense(10, activation='softmax')"]
    [sweep]
    units = [64, 128]
    "optimizer.learning_rate" = [1e-3, 1e-2]

>>> runs = expand(load_study("studies/quick.toml"))
>>> runs[0].id          # sha256 of the fully resolved spec: same spec, same id, across processes

This module knows nothing of torch: which layer and optimizer names exist is checked by
``mnistlab.load_study`` with the registries in ``layers.py`` and ``optim.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import CallSyntaxError, StudyError
from ..registry import ARGUMENT_ALIASES
from .calls import Call, parse_call

try:  # Python 3.11+; tomli is the same parser for 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SETTINGS = ("epochs", "batch_size", "optimizer")  # sweepable training settings; "optimizer.ARG" too


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    optimizer: str = "adam"  # a name or a call: "SGD(learning_rate=0.1, momentum=0.9)"
    # a Keras loss name or call: "categorical_crossentropy" after a softmax last layer, or
    # "CategoricalCrossentropy(from_logits=True)" after a linear one (engine/losses.py checks the pairing)
    loss: str = "categorical_crossentropy"
    validation: Literal["test", "none"] = "test"  # the seeds validate on the test set every epoch
    train_size: int | None = Field(None, ge=1)  # first N training images only (quick studies, tests)
    test_size: int | None = Field(None, ge=1)
    # how the engine computes, not what a run is (not in the run id; recorded with each run):
    # where (auto: a CUDA GPU when torch sees one) and in what precision (bf16: autocast, fp32 weights)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"


class ModelEntry(_Strict):
    name: str = Field(min_length=1)
    layers: list[str] = Field(min_length=1)
    description: str = ""
    # per-model overrides of [train] and of the study's sweep and repeats
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1)
    optimizer: str | None = None
    sweep: dict[str, list[Any]] = {}
    repeats: int | None = Field(None, ge=1, le=1000)


class Study(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    dataset: str = "mnist"
    seed: int = 0
    repeats: int = Field(1, ge=1, le=1000)
    train: TrainSettings = TrainSettings()
    sweep: dict[str, list[Any]] = {}
    models: list[ModelEntry] = Field(alias="model", min_length=1)
    path: str | None = None  # where it was read from, for messages
    source: str | None = Field(None, repr=False)  # the file's text, for line numbers in messages

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        return models

    def where(self, needle: str | None = None, key: bool = False) -> str:
        """``path:line`` of the first line containing ``needle`` (as a TOML key if ``key``), or the path."""
        line = _line_of(self.source or "", needle, key) if needle else None
        return f"{self.path or '<study>'}:{line}" if line else (self.path or "<study>")


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved training run. Plain data; its :attr:`id` is the hash of what changes training."""

    study: str
    model: str  # the model's display name in its study
    layers: tuple[str, ...]  # canonical layer call texts, templates resolved
    dataset: str
    epochs: int
    batch_size: int
    optimizer: str  # canonical call text, e.g. "sgd(learning_rate=0.1)"
    loss: str
    validation: str
    train_size: int | None
    test_size: int | None
    seed: int
    repeat: int = 0
    sweep: tuple[tuple[str, Any], ...] = ()  # the grid point, for tables and grouping
    point: str = field(default="", compare=False)  # "units=64, lr=0.01": the grid point as text

    def identity(self) -> dict[str, Any]:
        """What determines the trained weights; the display names and grid labels are not part of it."""
        return {"layers": list(self.layers), "dataset": self.dataset, "epochs": self.epochs,
                "batch_size": self.batch_size, "optimizer": self.optimizer, "loss": self.loss,
                "validation": self.validation, "train_size": self.train_size,
                "test_size": self.test_size, "seed": self.seed}

    @property
    def id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """The group a run's repeats share in tables: model name plus grid point."""
        return f"{self.model} [{self.point}]" if self.point else self.model

    def layer_calls(self) -> tuple[Call, ...]:
        return tuple(parse_call(text) for text in self.layers)

    def optimizer_call(self) -> Call:
        return parse_call(self.optimizer, bare_name_ok=True)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.identity(), study=self.study, model=self.model, repeat=self.repeat,
                    sweep=dict(self.sweep), point=self.point)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSpec":
        fields = dict(data)
        fields["layers"] = tuple(fields["layers"])
        fields["sweep"] = tuple(sorted(fields.get("sweep", {}).items()))
        return cls(**fields)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (syntax, schema, layer-call syntax, templates)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: cannot read the study file ({exc})") from None
    return parse_study(text, str(path))


def parse_study(text: str, path: str = "<study>") -> Study:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{path}:{match.group(1)}" if match else path
        message = re.sub(r"\s*\(at line.*\)", "", str(exc))
        raise StudyError(f"{where}: not valid TOML: {message}") from None
    try:
        study = Study.model_validate({**raw, "path": path, "source": text})
    except ValidationError as exc:
        raise StudyError(_pydantic_message(exc, path, text)) from None
    for model in study.models:
        _check_model_syntax(study, model)
    expand(study)  # template and sweep errors surface at load time, not mid-study
    return study


def _line_of(text: str, needle: str, key: bool = False) -> int | None:
    pattern = re.compile(rf"^\s*\"?{re.escape(needle)}\"?\s*=") if key else None
    for number, line in enumerate(text.splitlines(), start=1):
        if (pattern.match(line) if pattern else needle in line):
            return number
    return None


def _pydantic_message(exc: ValidationError, path: str, text: str) -> str:
    # a misspelt key shows up twice (unknown + missing): report the spelling, it is the cause
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] == "model" and len(loc) > 1:
        loc[1] = f"[{int(loc[1]) + 1}]"  # [[model]] tables are counted from 1 for people
    field_path = ".".join(loc).replace(".[", "[") or "study"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        known = {"": Study, "train": TrainSettings}.get(loc[0] if len(loc) == 2 else "", None)
        known = known or (ModelEntry if loc[0] == "model" else Study)
        fields = sorted(f.alias or n for n, f in known.model_fields.items() if n not in ("path", "source"))
        message = f"unknown field; expected one of: {', '.join(fields)}"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif "input" in err and not isinstance(err["input"], dict):
        message += f" (got {err['input']!r})"
    number = _line_of(text, loc[-1], key=True) if loc and err["type"] != "missing" else None
    return f"{path}{f':{number}' if number else ''}: {field_path}: {message}"


def _check_model_syntax(study: Study, model: ModelEntry) -> None:
    for index, layer in enumerate(model.layers):
        probe = _fill(layer, {name: 1 for name in _template_names(layer)})
        try:
            parse_call(probe)
        except CallSyntaxError as exc:
            raise StudyError(f"{study.where(layer)}: model {model.name!r}, layer {index + 1} {layer!r}: {exc}") from None
    for text in filter(None, [study.train.optimizer, model.optimizer]):
        try:
            parse_call(text, bare_name_ok=True)
        except CallSyntaxError as exc:
            raise StudyError(f"{study.where(text)}: optimizer {text!r}: {exc}") from None
    try:
        parse_call(study.train.loss, bare_name_ok=True)
    except CallSyntaxError as exc:
        raise StudyError(f"{study.where('loss', key=True)}: loss {study.train.loss!r}: {exc}") from None


def _template_names(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return []


def _fill(text: str, values: dict[str, Any]) -> str:
    return text.format(**{k: values[k] for k in _template_names(text)})


def derive_seed(study_seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat``: stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.sha256(f"mnistlab:{study_seed}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def expand(study: Study) -> list[RunSpec]:
    """Every run of the study: models x sweep grid x repeats, in file order."""
    runs: list[RunSpec] = []
    for model in study.models:
        grid = {**study.sweep, **model.sweep}
        _check_sweep(study, model, grid)
        keys = sorted(grid)
        repeats = model.repeats or study.repeats
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            for repeat in range(repeats):
                runs.append(_resolve(study, model, point, repeat))
    seen: dict[str, RunSpec] = {}
    for run in runs:
        if run.id in seen:
            raise StudyError(f"{study.where(run.model)}: {run.label!r} and {seen[run.id].label!r} resolve to the "
                             "same run (same layers, settings and seed) and would train the same weights; "
                             "remove one, or use repeats = N for more seeds")
        seen[run.id] = run
    return runs


def _check_sweep(study: Study, model: ModelEntry, grid: dict[str, list[Any]]) -> None:
    used = {name for layer in model.layers for name in _template_names(layer)}
    for key, values in grid.items():
        where = f"{study.where(key, key=True)}: sweep {key!r}"
        if not values:
            raise StudyError(f"{where}: needs at least one value")
        if len(set(map(repr, values))) != len(values):
            raise StudyError(f"{where}: values repeat ({values}); use repeats = N for repeated runs")
        if key not in SETTINGS and not key.startswith("optimizer.") and key not in used:
            raise StudyError(f"{where}: not a setting ({', '.join(SETTINGS)}, optimizer.ARG) "
                             f"and not a template variable of model {model.name!r} (uses: {sorted(used) or 'none'})")
    missing = sorted(used - set(grid))
    if missing:
        raise StudyError(f"{study.where(model.name)}: model {model.name!r} uses template variables "
                         f"{missing} but the sweep gives no values for them; add them to [sweep]")


def _resolve(study: Study, model: ModelEntry, point: dict[str, Any], repeat: int) -> RunSpec:
    settings = {"epochs": model.epochs or study.train.epochs,
                "batch_size": model.batch_size or study.train.batch_size,
                "optimizer": model.optimizer or study.train.optimizer}
    settings.update({k: v for k, v in point.items() if k in SETTINGS})
    optimizer = _optimizer_text(settings["optimizer"], {k.split(".", 1)[1]: v for k, v in point.items()
                                                        if k.startswith("optimizer.")})
    layers = tuple(parse_call(_fill(layer, point)).text() for layer in model.layers)
    label = ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(point.items()))
    return RunSpec(study=study.name, model=model.name, layers=layers, dataset=study.dataset,
                   epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]),
                   optimizer=optimizer, loss=_call_text(study.train.loss), validation=study.train.validation,
                   train_size=study.train.train_size, test_size=study.train.test_size,
                   seed=derive_seed(study.seed, repeat), repeat=repeat,
                   sweep=tuple(sorted(point.items())), point=label)


def _optimizer_text(text: str, overrides: dict[str, Any]) -> str:
    """Canonical optimizer text: lower-case name, Keras 2's ``lr`` spelled ``learning_rate``, sorted."""
    call = parse_call(text, bare_name_ok=True)
    kwargs = {ARGUMENT_ALIASES.get(k, k): v for k, v in call.kwargs}
    kwargs.update(overrides)
    return Call(call.name.lower(), call.args, tuple(sorted(kwargs.items()))).text()


def _call_text(text: str) -> str:
    """A call's canonical text for the run id: a bare name as written, a call with sorted arguments."""
    call = parse_call(text, bare_name_ok=True)
    return call.name if not call.args and not call.kwargs else Call(call.name, call.args, tuple(sorted(call.kwargs))).text()
