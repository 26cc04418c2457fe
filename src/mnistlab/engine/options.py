"""How the engine computes, chosen once at the edge (CLI flags, study settings, environment) and
passed down as a value: nothing in the engine reads the environment or a module switch.

>>> fit(spec, data, options=EngineOptions(dense_gemm="torch"))    # the MKL/autograd reference path
>>> EngineOptions.from_environment().resolved().record()         # what a run records as used
>>> EngineOptions.from_environment(settings=study.train, precision="bf16")  # study's [train], then flags

Every run records the resolved options and the engine-numerics version (``mnistlab.numerics``).
Device and precision change a run's numbers in the last bits (bf16: more) but not its id: like the
GEMM backend they are how the engine computes, recorded with the run, not what the run is.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch

from ..errors import OptionsError
from ..numerics import NUMERICS
from . import onednn

DEVICES = ("cpu", "cuda", "auto")  # auto: cuda where torch sees a GPU, else cpu (resolved())
GEMMS = ("onednn", "torch")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast of forward passes; weights, optimizer state, loss in fp32


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"  # where the dataset, models and optimizer state live; "auto": a GPU if there is one
    threads: int | None = None  # torch intra-op threads; None: torch's default (one per core)
    dense_gemm: str = "onednn"  # Dense GEMMs on oneDNN (MKL takes its AVX2 path on AMD CPUs) or torch's F.linear
    graph_free_mlp_step: bool = True  # CPU MLPs step without an autograd graph (fast.FastStep); needs oneDNN
    channels_last: bool = True  # CPU CNNs in NHWC: oneDNN's preferred layout, 5-15% less time a step
    eval_bytes: int = 16 * 2**20  # the widest layer's output per evaluation batch (bounds peak memory)
    precision: str = "fp32"  # "bf16": matmuls and convolutions autocast to bfloat16 (AVX512-BF16, tensor cores)

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
    def from_environment(cls, environ: Mapping[str, str] | None = None, settings: Any = None,
                         **overrides: Any) -> "EngineOptions":
        """Defaults, then ``MNISTLAB_GEMM=mkl|torch`` and ``MNISTLAB_FAST=0`` (read here and only here),
        then a study's ``[train]`` ``settings`` (its ``device`` and ``precision``), then explicit
        ``overrides`` (CLI flags; None: not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("MNISTLAB_GEMM", "").lower() in ("mkl", "torch"):
            values["dense_gemm"] = "torch"
        if env.get("MNISTLAB_FAST", "1") == "0":
            values["graph_free_mlp_step"] = False
        for name in ("device", "precision"):
            if getattr(settings, name, None) is not None:
                values[name] = getattr(settings, name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def resolved(self) -> "EngineOptions":
        """The options as they will actually apply on this machine: "auto" becomes the device torch
        sees; oneDNN and the graph-free step only on a CPU whose torch has oneDNN's matmul, in fp32
        (under bf16 autocast torch's own F.linear runs oneDNN's bf16 GEMM); NHWC only on the CPU."""
        device = pick_device(self.device)
        cpu = device == "cpu"
        gemm = ("onednn" if self.dense_gemm == "onednn" and cpu and self.precision == "fp32" and onednn.available()
                else "torch")
        return replace(self, device=device, dense_gemm=gemm,
                       graph_free_mlp_step=self.graph_free_mlp_step and gemm == "onednn",
                       channels_last=self.channels_last and cpu)

    def on(self, device: torch.device | str) -> "EngineOptions":
        """These options resolved for tensors on ``device`` (the engine computes where its data is)."""
        return replace(self, device=torch.device(device).type).resolved()

    def check_available(self) -> None:
        """Raise a one-line OptionsError when the device asked for is not on this machine."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise OptionsError(f"device 'cuda' was asked for, but torch {torch.__version__} sees no CUDA GPU "
                               "here; use device = \"auto\" or \"cpu\" (study [train] or --device)")

    def autocast(self) -> AbstractContextManager:
        """The context forward passes run in: bf16 autocast on the (resolved) device, or nothing.
        Parameters, gradients and optimizer state stay fp32 (the master weights)."""
        if self.precision == "fp32":
            return nullcontext()  # not even a disabled autocast: it costs a few µs a step
        return torch.autocast(pick_device(self.device), dtype=torch.bfloat16)

    def record(self) -> dict[str, Any]:
        """What a run stores in its environment: the resolved options, the numerics version, the device's
        name, and on a CPU the vector kernels torch dispatches to (``AVX512``, ``AVX2``): they sum in
        other orders, so the same run on an AVX2 and an AVX-512 machine differs in the last bits."""
        used = self.resolved()
        name = torch.cuda.get_device_name(0) if used.device == "cuda" and torch.cuda.is_available() else None
        return dict(asdict(used), numerics=NUMERICS, threads=used.threads or torch.get_num_threads(),
                    **({"device_name": name} if name else {}),
                    **({"cpu_capability": torch.backends.cpu.get_cpu_capability()} if used.device == "cpu" else {}),
                    **({"bf16_native": bf16_native(used.device)} if used.precision == "bf16" else {}))


def pick_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` where torch sees a GPU, else ``"cpu"``; any other name as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def bf16_native(device: str) -> bool:
    """Whether ``device`` computes bf16 in hardware (AVX512-BF16 or AMX for oneDNN; a GPU that supports it).
    Elsewhere bf16 is emulated: on an AVX2-only CPU a step took 3-10x the fp32 time (docs/PERFORMANCE.md)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())
