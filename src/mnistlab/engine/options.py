"""How the engine computes, chosen once at the edge (CLI flags, study settings, environment) and
passed down as a value: nothing in the engine reads the environment or a module switch.

>>> fit(spec, data, options=EngineOptions(dense_gemm="torch"))    # the MKL/autograd reference path
>>> EngineOptions.from_environment().resolved().record()         # what a run records as used

Every run records the resolved options and the engine-numerics version (``mnistlab.numerics``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch

from ..errors import OptionsError
from ..numerics import NUMERICS
from . import onednn

DEVICES = ("cpu", "cuda")
GEMMS = ("onednn", "torch")
PRECISIONS = ("fp32",)


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"  # where the dataset, models and optimizer state live
    threads: int | None = None  # torch intra-op threads; None: torch's default (one per core)
    dense_gemm: str = "onednn"  # Dense GEMMs on oneDNN (MKL takes its AVX2 path on AMD CPUs) or torch's F.linear
    graph_free_mlp_step: bool = True  # CPU MLPs step without an autograd graph (fast.FastStep); needs oneDNN
    channels_last: bool = True  # CPU CNNs in NHWC: oneDNN's preferred layout, 5-15% less time a step
    eval_bytes: int = 16 * 2**20  # the widest layer's output per evaluation batch (bounds peak memory)
    precision: str = "fp32"  # room for bf16 autocast

    def __post_init__(self) -> None:
        for name, value, allowed in (("device", self.device, DEVICES), ("dense_gemm", self.dense_gemm, GEMMS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise OptionsError(f"engine option {name}={value!r} is unknown; use one of {', '.join(allowed)}")
        if self.threads is not None and self.threads < 1:
            raise OptionsError(f"engine option threads={self.threads} must be at least 1")
        if self.eval_bytes < 1:
            raise OptionsError(f"engine option eval_bytes={self.eval_bytes} must be positive")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "EngineOptions":
        """Defaults, then ``MNISTLAB_GEMM=mkl|torch`` and ``MNISTLAB_FAST=0`` (read here and only here),
        then explicit ``overrides`` (CLI flags, study settings)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("MNISTLAB_GEMM", "").lower() in ("mkl", "torch"):
            values["dense_gemm"] = "torch"
        if env.get("MNISTLAB_FAST", "1") == "0":
            values["graph_free_mlp_step"] = False
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def resolved(self) -> "EngineOptions":
        """The options as they will actually apply on this machine: oneDNN and the graph-free step
        only on a CPU whose torch has oneDNN's matmul; NHWC only on the CPU."""
        cpu = self.device == "cpu"
        gemm = "onednn" if self.dense_gemm == "onednn" and cpu and onednn.available() else "torch"
        return replace(self, dense_gemm=gemm, graph_free_mlp_step=self.graph_free_mlp_step and gemm == "onednn",
                       channels_last=self.channels_last and cpu)

    def record(self) -> dict[str, Any]:
        """What a run stores in its environment: the resolved options, the numerics version, the device's name."""
        used = self.resolved()
        name = torch.cuda.get_device_name(0) if used.device == "cuda" else None
        return dict(asdict(used), numerics=NUMERICS, threads=used.threads or torch.get_num_threads(),
                    **({"device_name": name} if name else {}))
