"""Dense layers on oneDNN's GEMM instead of MKL's, where that is faster.

PyTorch's CPU wheel runs ``F.linear`` and ``torch.mm`` through MKL, and MKL takes its AVX2 code
path on AMD processors even when they have AVX-512. oneDNN (``torch.ops.mkldnn``, bundled in the
same wheel) dispatches on the instruction set alone. On the 2-core AMD EPYC (AVX-512) that CI and
the benchmarks use, oneDNN's matmul runs the MLPs' GEMMs 1.4-3x faster than MKL, forward and
backward (``benchmarks/README.md``, "GEMM backends"; figures in ``docs/PERFORMANCE.md``).

:class:`Linear` is an ``nn.Linear`` (same parameters, same ``state_dict``) whose forward and
backward call ``torch.ops.mkldnn._linear_pointwise`` for 2-D float32 CPU input, and fall back to
``F.linear`` otherwise: other dtypes, CUDA, bf16 autocast (where torch's F.linear casts and runs
oneDNN's bf16 GEMM), a wheel without oneDNN, or ``use_onednn = False`` (set from
``EngineOptions.dense_gemm`` by the engine).
The results equal ``F.linear``'s to float rounding (``tests/test_onednn.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _find_op():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.ones(2, 3)
        if not torch.equal(op(x, torch.ones(4, 3), None, "none", [], ""), torch.full((2, 4), 3.0)):
            return None
    except (AttributeError, RuntimeError):
        return None
    return op


_OP = _find_op()  # what this torch build can do; whether to use it is EngineOptions.dense_gemm


def available() -> bool:
    """True when this torch build has oneDNN's matmul (and it computes correctly)."""
    return _OP is not None


def matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` on oneDNN (``b`` in nn.Linear's (out, in) layout; strided views are fine)."""
    return _OP(a, b, None, "none", [], "")


def linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` on oneDNN, no autograd (only when :func:`available`)."""
    return _OP(x, weight, bias, "none", [], "")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = matmul_t(grad, weight.t()) if ctx.needs_input_grad[0] else None  # not for the input layer
        grad_w = matmul_t(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           use_onednn: bool = True) -> torch.Tensor:
    """``F.linear`` on oneDNN where it applies (see the module's docstring)."""
    if (use_onednn and _OP is not None and x.dim() == 2 and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        return _Linear.apply(x, weight, bias)  # under bf16 autocast F.linear runs oneDNN's bf16 GEMM instead
    return F.linear(x, weight, bias)


# A group's (K, B, in) x (K, out, in) layer runs as K oneDNN GEMMs when each is at least this many
# multiply-adds, else as one MKL baddbmm: K=3 128x784->364 604 us against 1,560; K=12 128x784->100
# 952 against 1,361; K=12 128x100->10 218 against 50 (2 threads; benchmarks/README.md "GEMM backends")
LOOP_MIN_MACS = 1_000_000


class _StackedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.stack([linear_forward(x[k], weight[k], None if bias is None else bias[k])
                            for k in range(x.shape[0])])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        k = range(x.shape[0])
        grad_x = torch.stack([matmul_t(grad[i], weight[i].t()) for i in k]) if ctx.needs_input_grad[0] else None
        grad_w = torch.stack([matmul_t(grad[i].t(), x[i].t()) for i in k]) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   use_onednn: bool = True, min_macs: int = LOOP_MIN_MACS) -> torch.Tensor:
    """K independent dense layers: x (K, B, in), weight (K, out, in), bias (K, out) -> (K, B, out)."""
    k, b, n_in = x.shape
    if (use_onednn and _OP is not None and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and b * n_in * weight.shape[1] >= min_macs and not torch.is_autocast_enabled("cpu")):
        return _StackedLinear.apply(x.contiguous(), weight, bias)
    out = x @ weight.transpose(1, 2)
    return out + bias.unsqueeze(1) if bias is not None else out


class Linear(nn.Linear):
    """``nn.Linear`` whose matmuls run on oneDNN on CPU (unless ``use_onednn`` is set False)."""

    use_onednn = True  # the engine sets it per model from EngineOptions (engine.fit.configure)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.use_onednn)
