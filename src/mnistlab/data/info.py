"""What a dataset is (:class:`DatasetInfo`: shapes, SHA-256 of its arrays, sources) and what a
source must do (:class:`Source`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

Progress = Callable[[str], None]  # receives one-line status messages


class Source(Protocol):
    """Where a dataset can come from: ``load`` returns its four arrays, not yet verified."""

    name: str

    def load(self, info: DatasetInfo, work: Path, say: Progress) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: what its arrays must be, and where to get them."""

    name: str
    shapes: dict[str, tuple[int, ...]]  # KEYS -> shape; every array is uint8
    sha256: dict[str, str]  # KEYS -> sha256 of the C-order array bytes
    sources: tuple[Source, ...]  # tried in this order by fetch()
    num_classes: int = 10
    classes: tuple[str, ...] = tuple("0123456789")  # label -> name, for tables, confusion matrices, mistakes

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.shapes["x_train"][1:]  # (28, 28)
