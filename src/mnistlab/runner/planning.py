"""Which runs train together, and in what order: same-shape runs gathered into vectorised groups
that fit in memory, and with several workers the most work first.

>>> [len(g) for g in plan(expand(study))]     # e.g. [3, 1, 1]: a group of three repeats, two lone runs
>>> chosen(expand(study), ("model 3*",))       # only the runs of the models named (`run --model`)
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Mapping

from ..engine import cost, memory
from ..engine.group import MAX_GROUP, group_key
from ..errors import OptionsError
from ..spec import RunSpec


def chosen(specs: list[RunSpec], models: str | tuple[str, ...] = ()) -> list[RunSpec]:
    """The runs of the models ``models`` names (one name, or several; every run where it names none),
    in study order: each entry is a model's exact name or a glob (``'model 3*'``, ``'*sgd*'``), matched
    case-sensitively as the study spells it. An entry that matches no model is an OptionsError that
    lists the names."""
    if not models:
        return specs
    names = list(dict.fromkeys(s.model for s in specs))
    study = specs[0].study if specs else "?"
    wanted: set[str] = set()
    for pattern in (models,) if isinstance(models, str) else models:
        matched = [n for n in names if n == pattern or fnmatchcase(n, pattern)]
        if not matched:
            raise OptionsError(f"--model {pattern!r} matches no model of study {study!r}; its models: "
                               + ", ".join(repr(n) for n in names) + " (a name, or a glob such as 'model 1*')")
        wanted.update(matched)
    return [s for s in specs if s.model in wanted]


def plan(specs: list[RunSpec], group: bool = True, longest_first: bool = False,
         done: Mapping[str, int] | None = None) -> list[list[RunSpec]]:
    """Runs in study order, same-shape runs gathered into groups when ``group``: at most ``MAX_GROUP``,
    and no more than fit in ``MEMORY_SHARE`` of the machine's memory together (:func:`group_limit`).

    ``longest_first`` (several workers or Ray tasks take from this plan) orders the groups by their
    multiply-adds left to compute, most first, ties in study order: a long run that starts last would
    train alone while the other workers sit idle (longest-processing-time-first scheduling). ``done``
    (run id -> epochs done) gives the runs that resume: a run resumed at epoch 7 of 12 has 5 left."""
    order = _grouped(specs) if group else [[s] for s in specs]
    if longest_first:
        macs: dict[tuple, int] = {}  # a sweep's runs share a few architectures: count each once

        def work(members: list[RunSpec]) -> int:
            key = (members[0].layers, members[0].dataset, members[0].epochs, members[0].train_size,
                   members[0].test_size, members[0].validation)
            if key not in macs:
                macs[key] = cost.macs_per_run(members[0])
            left = sum(1 - min((done or {}).get(s.id, 0), s.epochs) / s.epochs for s in members)
            return macs[key] * left
        order.sort(key=work, reverse=True)  # stable: equal work keeps study order
    return order


def _grouped(specs: list[RunSpec]) -> list[list[RunSpec]]:
    groups: dict[Any, list[list[RunSpec]]] = {}
    limits: dict[Any, int] = {}
    order: list[list[RunSpec]] = []
    for spec in specs:
        key = group_key(spec)
        if key is None:
            order.append([spec])
            continue
        bucket = groups.setdefault(key, [])
        if key not in limits:
            limits[key] = group_limit(spec)
        if not bucket or len(bucket[-1]) >= limits[key]:
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(spec)
    return order


MEMORY_SHARE = 0.75  # of the machine's memory (the GPU's on CUDA) that one group may be estimated to need


def group_limit(spec: RunSpec) -> int:
    """How many runs shaped like ``spec`` train together: ``MAX_GROUP``, fewer where that many would
    not fit in memory (each member holds its own weights, optimizer state and activations:
    :func:`mnistlab.engine.cost.peak_bytes`), never fewer than one (a lone run too large is refused
    by the study check, with its size)."""
    available = memory.memory_bytes()
    if available is None:
        return MAX_GROUP
    one, two = cost.peak_bytes([spec]), cost.peak_bytes([spec, spec])
    per_member = max(two - one, 1)
    return max(1, min(MAX_GROUP, 1 + int((MEMORY_SHARE * available - one) // per_member)))


def epochs_done(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Epochs done of the runs among ``rows`` (the store's) that resume, left ``running``: what is left
    of them to plan."""
    return {r["id"]: r["epochs_done"] or 0 for r in rows if r["status"] == "running"}
