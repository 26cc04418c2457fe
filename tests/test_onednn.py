"""Dense layers on oneDNN against F.linear (MKL) as the reference: outputs and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from mnistlab.engine import onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN matmul")


def reference(fn, *tensors):
    """fn's output and its inputs' grads (of a fixed random projection of the output); fn is torch's own."""
    return _run(fn, *tensors)


def _run(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None for t in tensors]
    out = fn(*leaves)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), [t.grad if t is not None and t.requires_grad else None for t in leaves]


@pytest.mark.parametrize("input_grad", [True, False])  # False: the first layer, whose input is data
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_f_linear(input_grad, bias):
    torch.manual_seed(0)
    x = torch.randn(37, 53).requires_grad_(input_grad)
    w, b = torch.randn(29, 53, requires_grad=True), torch.randn(29, requires_grad=True) if bias else None
    out, grads = _run(onednn.linear, x, w, b)
    ref_out, ref_grads = reference(F.linear, x, w, b)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loop", [True, False])  # K oneDNN GEMMs, or one batched matmul below the threshold
def test_stacked_linear_equals_each_member_alone(loop):
    torch.manual_seed(1)
    x = torch.randn(3, 16, 40, requires_grad=True)
    w, b = torch.randn(3, 12, 40, requires_grad=True), torch.randn(3, 12, requires_grad=True)
    out, (gx, gw, gb) = _run(lambda x, w, b: onednn.stacked_linear(x, w, b, min_macs=1 if loop else 10**12), x, w, b)
    assert out.shape == (3, 16, 12)
    for k in range(3):
        want, (wx, ww, wb) = reference(lambda x, w, b: F.linear(x, w, b), x[k], w[k], b[k])
        torch.testing.assert_close(out[k], want, rtol=1e-5, atol=1e-4)
    ref_out, (rx, rw, rb) = reference(lambda x, w, b: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)), x, w, b)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-4)
    for got, want in ((gx, rx), (gw, rw), (gb, rb)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_float64_and_non_2d_input_take_f_linear():
    w = torch.randn(4, 6, dtype=torch.float64)
    out = onednn.linear(torch.randn(2, 6, dtype=torch.float64, requires_grad=True), w)
    assert out.dtype == torch.float64 and out.grad_fn.name() == "MmBackward0"
    out = onednn.linear(torch.randn(2, 3, 6, requires_grad=True), w.float())
    assert out.shape == (2, 3, 4) and not out.grad_fn.name().endswith("_LinearBackward")


def test_use_onednn_false_takes_f_linear():
    x, w = torch.randn(4, 6, requires_grad=True), torch.randn(5, 6)
    assert onednn.linear(x, w).grad_fn.name().endswith("_LinearBackward")
    assert onednn.linear(x, w, use_onednn=False).grad_fn.name() == "MmBackward0"
