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
import math
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import CallSyntaxError, StudyError
from ..registry import ARGUMENT_ALIASES
from .calls import Call, parse_call
from .runspec import RunSpec
from .template import TemplateError, fill, names

try:  # Python 3.11+; tomli is the same parser for 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SETTINGS = ("epochs", "batch_size", "optimizer")  # sweepable training settings; "optimizer.ARG" too
MAX_RUNS = 10_000  # more runs than this in one study is likely a typo in a sweep: asked for with yes=True


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    optimizer: str = "adam"  # a name or a call: "SGD(learning_rate=0.1, momentum=0.9)"
    # a Keras loss name or call: "categorical_crossentropy" after a softmax last layer, or
    # "CategoricalCrossentropy(from_logits=True)" after a linear one (engine/losses.py checks the pairing)
    loss: str = "categorical_crossentropy"
    # "test": the test set every epoch (the seeds' way); a fraction in (0, 1): the last part of the
    # training images held out before shuffling (Keras' validation_split), the test set scored once at
    # the end; "none": no validation
    validation: str | float = "test"
    callbacks: list[str] = []  # Keras callback calls: "EarlyStopping(monitor='val_loss', patience=3)"
    train_size: int | None = Field(None, ge=1)  # first N training images only (quick studies, tests)
    test_size: int | None = Field(None, ge=1)
    # how the engine computes, not what a run is (not in the run id; recorded with each run):
    # where (auto: a CUDA GPU when torch sees one) and in what precision (bf16: autocast, fp32 weights)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"

    @field_validator("validation", mode="before")
    @classmethod
    def _validation(cls, value: Any) -> Any:
        fraction = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
        if value not in ("test", "none") and not fraction:
            raise ValueError(f'must be "test", "none" or the fraction of the training images to hold out, '
                             f'in (0, 1) like 0.1; got {value!r}')
        return float(value) if fraction else value


class ModelEntry(_Strict):
    name: str = Field(min_length=1)
    layers: list[str] = Field(min_length=1)
    description: str = ""
    # per-model overrides of [train] and of the study's sweep and repeats
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1)
    optimizer: str | None = None
    callbacks: list[str] | None = None  # replaces [train] callbacks for this model ([] for none)
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

    def to_toml(self, path: str | Path | None = None) -> str:
        """The study as TOML text that parses back to an equal study; also written to ``path`` if given.

        >>> mnistlab.study(name="s", models={"m": ["Dense(10, activation='softmax')"]}).to_toml("s.toml")
        """
        import tomli_w  # only writing needs it

        data = _prune(self.model_dump(by_alias=True, exclude={"path", "source"}, exclude_none=True))
        try:
            text = tomli_w.dumps(data, multiline_strings=False, indent=2)
        except TypeError as exc:  # e.g. a sweep value that TOML cannot hold
            raise StudyError(f"{self.where()}: {_unwritable(data)}cannot be written as TOML ({exc}); "
                             "use str, int, float, bool or lists of them") from None
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def where(self, needle: str | None = None, key: bool = False) -> str:
        """``path:line`` of the first line containing ``needle`` (as a TOML key if ``key``), or the path."""
        line = _line_of(self.source or "", needle, key) if needle else None
        return f"{self.path or '<study>'}:{line}" if line else (self.path or "<study>")


def load_study(path: str | Path, yes: bool = False) -> Study:
    """Read and validate a study file (syntax, schema, layer-call syntax, templates, run count).

    More than :data:`MAX_RUNS` runs are refused unless ``yes``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: cannot read the study file ({exc})") from None
    return parse_study(text, str(path), yes=yes)


def parse_study(text: str, path: str = "<study>", yes: bool = False) -> Study:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{path}:{match.group(1)}" if match else path
        message = re.sub(r"\s*\(at line.*\)", "", str(exc))
        raise StudyError(f"{where}: not valid TOML: {message}") from None
    return build_study(raw, path, text, yes=yes)


def build_study(raw: dict[str, Any], path: str | None = None, source: str | None = None, yes: bool = False) -> Study:
    """A study from the values a TOML file would hold (``model`` a list of tables): the same schema,
    checks and one-line errors as a file. ``mnistlab.study(...)`` builds its studies here. More than
    :data:`MAX_RUNS` runs are refused unless ``yes``.

    >>> build_study({"name": "s", "model": [{"name": "m", "layers": ["Dense(10, activation='softmax')"]}]})
    """
    try:
        study = Study.model_validate({**raw, "path": path, "source": source})
    except ValidationError as exc:
        raise StudyError(_pydantic_message(exc, path or "<study>", source or "")) from None
    for model in study.models:
        _check_model_syntax(study, model)
    if not yes:
        _check_run_count(study)
    expand(study)  # template and sweep errors surface at load time, not mid-study
    return study


def _prune(data: Any) -> Any:
    """Leave out empty descriptions and sweeps: the file says only what differs from an empty study."""
    if isinstance(data, dict):
        return {k: _prune(v) for k, v in data.items() if not (k in ("description", "sweep") and not v)}
    return [_prune(v) for v in data] if isinstance(data, list) else data


def _unwritable(data: dict[str, Any]) -> str:
    """``sweep 'units': `` for the first sweep whose values TOML cannot hold (for the error message)."""
    import tomli_w

    sweeps = [data.get("sweep", {})] + [m.get("sweep", {}) for m in data.get("model", [])]
    for key, values in ((k, v) for sweep in sweeps for k, v in sweep.items()):
        try:
            tomli_w.dumps({"v": values})
        except TypeError:
            return f"sweep {key!r}: "
    return ""


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
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = {"": Study, "train": TrainSettings}.get(loc[0] if len(loc) == 2 else "", None)
        known = known or (ModelEntry if loc[0] == "model" else Study)
        fields = sorted(f.alias or n for n, f in known.model_fields.items() if n not in ("path", "source"))
        message = f"unknown field; expected one of: {', '.join(fields)}"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif "input" in err and not isinstance(err["input"], dict) and err["type"] != "value_error":
        message += f" (got {err['input']!r})"  # a validator's own message says what it got
    number = _line_of(text, loc[-1], key=True) if loc and err["type"] != "missing" else None
    return f"{path}{f':{number}' if number else ''}: {field_path}: {message}"


def _check_model_syntax(study: Study, model: ModelEntry) -> None:
    for index, layer in enumerate(model.layers):
        try:
            parse_call(fill(layer, {name: 1 for name in names(layer)}))
        except (CallSyntaxError, TemplateError) as exc:
            raise StudyError(f"{study.where(layer)}: model {model.name!r}, layer {index + 1} {layer!r}: {exc}") from None
    for what, texts in (("optimizer", [study.train.optimizer, model.optimizer]),
                        ("callback", [*study.train.callbacks, *(model.callbacks or [])])):
        for text in filter(None, texts):
            try:
                parse_call(fill(text, {name: 1 for name in names(text)}), bare_name_ok=True)
            except (CallSyntaxError, TemplateError) as exc:
                owner = f"model {model.name!r}: " if what == "callback" else ""
                raise StudyError(f"{study.where(text)}: {owner}{what} {text!r}: {exc}") from None
    try:
        parse_call(study.train.loss, bare_name_ok=True)
    except CallSyntaxError as exc:
        raise StudyError(f"{study.where('loss', key=True)}: loss {study.train.loss!r}: {exc}") from None


def count_runs(study: Study) -> dict[str, int]:
    """Runs per model (sweep grid size x repeats), counted without expanding anything."""
    return {m.name: math.prod(len(v) for v in {**study.sweep, **m.sweep}.values()) * (m.repeats or study.repeats)
            for m in study.models}


def _check_run_count(study: Study) -> None:
    counts = count_runs(study)
    total = sum(counts.values())
    if total > MAX_RUNS:
        biggest = max(counts, key=counts.get)
        where = study.where("[sweep]") if study.sweep else study.where(biggest)
        raise StudyError(f"{where}: the study has {total:,} runs (models x sweep grid x repeats; model {biggest!r} "
                         f"alone {counts[biggest]:,}), more than {MAX_RUNS:,}; check the sweep, or pass --yes "
                         "(Python: yes=True) to train them all")


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
            first = _resolve(study, model, dict(zip(keys, values)))  # repeats differ only in seed
            runs += [replace(first, seed=derive_seed(study.seed, repeat), repeat=repeat) for repeat in range(repeats)]
    seen: dict[str, RunSpec] = {}
    for run in runs:
        if run.id in seen:
            raise StudyError(f"{study.where(run.model)}: {run.label!r} and {seen[run.id].label!r} resolve to the "
                             "same run (same layers, settings and seed) and would train the same weights; "
                             "remove one, or use repeats = N for more seeds")
        seen[run.id] = run
    return runs


def _templated(study: Study, model: ModelEntry, grid: dict[str, list[Any]]) -> list[str]:
    """Every text of a model that may hold template variables: layers, optimizer(s), callbacks."""
    optimizers = [model.optimizer or study.train.optimizer] + [v for v in grid.get("optimizer", []) if isinstance(v, str)]
    return [*model.layers, *optimizers, *_callbacks_of(study, model)]


def _callbacks_of(study: Study, model: ModelEntry) -> list[str]:
    return study.train.callbacks if model.callbacks is None else model.callbacks


def _check_sweep(study: Study, model: ModelEntry, grid: dict[str, list[Any]]) -> None:
    used = {name for text in _templated(study, model, grid) for name in names(text)}
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


def _resolve(study: Study, model: ModelEntry, point: dict[str, Any]) -> RunSpec:
    """The run of one grid point, repeat 0."""
    settings = {"epochs": model.epochs or study.train.epochs,
                "batch_size": model.batch_size or study.train.batch_size,
                "optimizer": model.optimizer or study.train.optimizer}
    settings.update({k: v for k, v in point.items() if k in SETTINGS})
    optimizer = _optimizer_text(fill(settings["optimizer"], point),
                                {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("optimizer.")})
    layers = tuple(_parsed(fill(layer, point)).text() for layer in model.layers)
    callbacks = tuple(_canonical(_parsed(fill(text, point), bare_name_ok=True)).text()
                      for text in _callbacks_of(study, model))
    label = ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in sorted(point.items()))
    return RunSpec(study=study.name, model=model.name, layers=layers, dataset=study.dataset,
                   epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]),
                   optimizer=optimizer, loss=_call_text(study.train.loss), validation=study.train.validation,
                   train_size=study.train.train_size, test_size=study.train.test_size,
                   seed=derive_seed(study.seed, 0), repeat=0, callbacks=callbacks,
                   sweep=tuple(sorted(point.items())), point=label)


@lru_cache(maxsize=4096)
def _parsed(text: str, bare_name_ok: bool = False) -> Call:
    """``parse_call``, cached: a sweep repeats the same few layer and optimizer texts many times."""
    return parse_call(text, bare_name_ok=bare_name_ok)


def _optimizer_text(text: str, overrides: dict[str, Any]) -> str:
    """Canonical optimizer text: lower-case name, Keras 2's ``lr`` spelled ``learning_rate``, arguments
    sorted, a nested schedule's too. A swept ``optimizer.learning_rate`` may be a number or a schedule's
    call text (``"CosineDecay(0.1, 4690)"``)."""
    call = _parsed(text, bare_name_ok=True)
    kwargs = {ARGUMENT_ALIASES.get(k, k): v for k, v in call.kwargs}
    kwargs.update({k: parse_call(v) if isinstance(v, str) and "(" in v else v for k, v in overrides.items()})
    return _canonical(Call(call.name.lower(), call.args, tuple(kwargs.items()))).text()


def _canonical(value: Any) -> Any:
    """A call with its keyword arguments sorted, nested calls too: one text per meaning."""
    if not isinstance(value, Call):
        return value
    kwargs = sorted(((k, _canonical(v)) for k, v in value.kwargs), key=lambda kv: kv[0])
    return Call(value.name, tuple(_canonical(a) for a in value.args), tuple(kwargs))


def _call_text(text: str) -> str:
    """A call's canonical text for the run id: a bare name as written, a call with sorted arguments."""
    call = parse_call(text, bare_name_ok=True)
    return call.name if not call.args and not call.kwargs else Call(call.name, call.args, tuple(sorted(call.kwargs))).text()
