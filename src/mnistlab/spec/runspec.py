"""One fully resolved training run as plain data: what a study expands into, and what the engine,
the store and the reports receive. Its id is the hash of what changes training."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .calls import Call, parse_call


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
    validation: str | float  # "test", "none" or the held-out fraction of the training images
    train_size: int | None
    test_size: int | None
    seed: int
    repeat: int = 0
    callbacks: tuple[str, ...] = ()  # canonical callback call texts, templates resolved
    sweep: tuple[tuple[str, Any], ...] = ()  # the grid point, for tables and grouping
    point: str = field(default="", compare=False)  # "units=64, lr=0.01": the grid point as text

    def identity(self) -> dict[str, Any]:
        """What determines the trained weights; the display names and grid labels are not part of it.
        Settings added later enter only when set, so the runs of existing studies keep their ids."""
        return {"layers": list(self.layers), "dataset": self.dataset, "epochs": self.epochs,
                "batch_size": self.batch_size, "optimizer": self.optimizer, "loss": self.loss,
                "validation": self.validation, "train_size": self.train_size,
                "test_size": self.test_size, "seed": self.seed,
                **({"callbacks": list(self.callbacks)} if self.callbacks else {})}

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
        fields["callbacks"] = tuple(fields.get("callbacks", ()))
        fields["sweep"] = tuple(sorted(fields.get("sweep", {}).items()))
        return cls(**fields)
