"""How a study runs (as opposed to how the engine computes: ``engine.options.EngineOptions``),
built once at the edge (CLI flags, API arguments) and passed down as a value.

>>> api.run(study, options=RunOptions(retry_failed=True, executor="processes", workers=2))
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionsError

EXECUTOR_NAMES = ("inline", "processes")


@dataclass(frozen=True)
class RunOptions:
    retry_failed: bool = False  # train failed and diverged runs again
    group: bool = True  # same-shape runs train together as one vectorised group
    executor: str = "inline"  # where runs execute: this process, or a pool of local processes
    workers: int = 1  # processes for the "processes" executor (each with cores / workers threads)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTOR_NAMES:
            raise OptionsError(f"executor {self.executor!r} is unknown; use one of {', '.join(EXECUTOR_NAMES)}")
        if self.workers < 1:
            raise OptionsError(f"--workers must be at least 1, got {self.workers}")
