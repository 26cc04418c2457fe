"""How a study runs (as opposed to how the engine computes: ``engine.options.EngineOptions``),
built once at the edge (CLI flags, API arguments) and passed down as a value.

>>> api.run(study, options=RunOptions(retry_failed=True, executor="processes", workers=2))
>>> api.run(study, options=RunOptions(executor="ray", address="auto"))   # a running Ray cluster
>>> api.run(study, models=["model 3*"])       # only that model's runs (names or globs)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..errors import OptionsError

EXECUTOR_NAMES = ("inline", "processes", "ray")


@dataclass(frozen=True)
class RunOptions:
    retry_failed: bool = False  # train failed and diverged runs again
    group: bool = True  # same-shape runs train together as one vectorised group
    executor: str = "inline"  # where runs execute: this process, a pool of local processes, a Ray cluster
    workers: int = 1  # processes for the "processes" executor (each with cores / workers threads)
    address: str | None = None  # Ray: "auto", "HOST:PORT" or "ray://HOST:10001"; None: $RAY_ADDRESS or a local cluster
    resubmits: int = 3  # Ray: times a run whose worker or node died is resubmitted before it is recorded failed
    models: tuple[str, ...] = ()  # train only these models' runs (exact names or globs); () every model

    def __post_init__(self) -> None:
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)  # one name, or a list
        if not all(isinstance(m, str) and m for m in models):
            raise OptionsError(f"models must be model names or globs, got {self.models!r}")
        object.__setattr__(self, "models", models)
        if self.executor not in EXECUTOR_NAMES:
            raise OptionsError(f"executor {self.executor!r} is unknown; use one of {', '.join(EXECUTOR_NAMES)}")
        if self.workers < 1:
            raise OptionsError(f"--workers must be at least 1, got {self.workers}")
        if self.executor == "ray" and self.workers > 1:
            raise OptionsError("--workers is for --executor processes; on Ray every run is a task and the "
                               "cluster's CPUs (and GPUs) set how many train at once")
        if self.address is not None and self.executor != "ray":
            raise OptionsError(f"--address {self.address} names a Ray cluster; use it with --executor ray")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:  # before anything is planned
            raise OptionsError("--executor ray needs Ray, which is not installed: pip install 'mnistlab[ray]'")
        if self.resubmits < 0:
            raise OptionsError(f"resubmits must be at least 0, got {self.resubmits}")
