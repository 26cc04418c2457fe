"""A trained model as an ONNX file, through torch's exporter (``torch.onnx.export(dynamo=True)``).

>>> write_onnx(model, calls, Path("model.onnx"), metadata={"run_id": run_id})

The graph takes what the engine trained on: ``pixels`` of shape (N, 1, 28, 28) for models whose
first layers are convolutions or pooling, (N, 784) for the others, float32 pixels / 255 (white digit
on black, as MNIST), with a dynamic batch axis N. Its output (N, 10) is ``probabilities`` when the
model ends in a softmax (the softmax the engine leaves to its loss is put back into the graph), else
``logits``: the last layer's own output, which the training loss took as logits; a softmax of them
gives the class probabilities. The model's ``doc_string`` and ``metadata_props`` say which.

Needs the optional ``onnx`` extra (``pip install 'mnistlab[onnx]'``): onnx and onnxscript, which the
exporter imports, and onnxruntime, with which the file written is checked against torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ReportError
from ..spec.calls import Call
from .layers import Sequential, input_kind, input_shape

INSTALL = "pip install 'mnistlab[onnx]'"
CHECK_TOLERANCE = 1e-4  # largest |onnxruntime - torch| output accepted for the written file (float rounding)


class Exported(nn.Module):
    """The model as deployed: plain torch layers (ONNX has no oneDNN op), softmax put back if it had one."""

    def __init__(self, model: Sequential):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        for name, module in list(self.model.named_children()):
            if isinstance(module, nn.Linear) and type(module) is not nn.Linear:  # onednn.Linear
                plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
                plain.load_state_dict(module.state_dict())
                setattr(self.model, name, plain)  # same key: _modules keeps its order
        self.softmax = model.output_activation == "softmax"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels)
        return torch.softmax(out, dim=1) if self.softmax else out


def output_name(model: Sequential) -> str:
    return "probabilities" if model.output_activation == "softmax" else "logits"


def describe(model: Sequential, calls: Sequence[Call]) -> str:
    """The doc string: input layout and what the output is."""
    shape = ("N, 1, 28, 28" if input_kind(calls) == "image" else "N, 784")
    out = ("class probabilities (softmax included)" if model.output_activation == "softmax" else
           f"logits: the last layer's output (activation {model.output_activation!r}), which training "
           "took as logits; apply softmax for probabilities")
    return (f"mnistlab model. Input 'pixels': float32 ({shape}), pixel values / 255, white digit on black "
            f"as in MNIST. Output '{output_name(model)}': float32 (N, 10), {out}.")


def require() -> None:
    """Raise a one-line ReportError saying how to install the exporter's packages if one is missing."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise ReportError(f"--format onnx needs the {name} package: {INSTALL}") from None


def write_onnx(model: Sequential, calls: Sequence[Call], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (built from ``calls``) to ``path``; check it with onnxruntime; return ``path``."""
    require()
    import onnx
    module = Exported(model)
    example = torch.rand(2, *input_shape(calls))
    try:
        with _quiet():
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["pixels"],
                                        output_names=[output_name(model)], verbose=False,
                                        dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}})
    except Exception as exc:  # noqa: BLE001  the exporter's many error types: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"torch's ONNX exporter cannot export this model ({first}); "
                          "use --format safetensors") from exc
    proto = program.model_proto
    proto.doc_string = describe(model, calls)
    props = {"input_layout": "N,1,28,28" if input_kind(calls) == "image" else "N,784", "input_scale": "pixels/255",
             "output": output_name(model), "output_activation": model.output_activation, **(metadata or {})}
    onnx.helper.set_model_props(proto, props)
    onnx.save_model(proto, str(path))
    _check(module, path, example.shape[1:])
    return path


def _check(module: Exported, path: Path, shape: torch.Size) -> None:
    """The file written gives torch's outputs on random pixels, to float rounding."""
    import numpy as np
    import onnxruntime

    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": x.numpy()})[0]
    with torch.inference_mode():
        want = module(x).numpy()
    gap = float(np.abs(got - want).max())
    if not gap <= CHECK_TOLERANCE * max(1.0, float(np.abs(want).max())):
        raise ReportError(f"{path}: onnxruntime's outputs differ from torch's by {gap:.3g}; the ONNX export "
                          "of this model is wrong, use --format safetensors")


@contextlib.contextmanager
def _quiet():
    """The exporter logs progress and warnings (torchvision ops, deprecations) that are not the user's."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
