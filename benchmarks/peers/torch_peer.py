"""Plain-PyTorch peer: the idiomatic hand-written loop a PyTorch user would write for the workload.

Run from the repository root with the project venv:

    .venv/bin/python -m benchmarks.peers.torch_peer --workload W1 --epochs 3 --threads 2

The whole dataset is one float tensor (pixels / 255) on the device (``--device cuda``: the GPU);
batches are `randperm` slices (the last, partial batch included, as Keras does); no DataLoader, no
torch.compile; ``--precision bf16`` autocasts the forward pass, as the PyTorch AMP recipe does. Keras semantics where
they matter for the work done: glorot-uniform / RandomNormal initialisation, BatchNorm momentum
0.99 (torch's 0.01) and eps 1e-3, Adam eps 1e-7. Softmax + categorical cross-entropy is
`F.cross_entropy` on logits. Validation runs in batches of the training batch size (Keras'
default validation_batch_size). Output: JSON lines, see benchmarks/peers/common.py.
"""

from __future__ import annotations

from benchmarks.machine import EpochClock
from benchmarks.peers.common import main_loop, parse_args, pin_threads
from benchmarks.workloads import Run, trace


def _dense(nn, a, in_shape):
    linear = nn.Linear(in_shape[-1], a["units"])
    if "stddev" in a:
        nn.init.normal_(linear.weight, 0.0, a["stddev"])
    else:
        nn.init.xavier_uniform_(linear.weight)  # Keras' glorot_uniform
    nn.init.zeros_(linear.bias)
    return [linear, *_activation(nn, a["activation"])]


def _conv(nn, a, in_shape):
    conv = nn.Conv2d(in_shape[-1], a["filters"], a["kernel_size"], padding=a["padding"])
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return [conv, *_activation(nn, a["activation"])]


def _batchnorm(nn, a, in_shape):
    norm = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
    return [norm(in_shape[-1], momentum=1 - a["momentum"], eps=a["epsilon"])]


def _activation(nn, name):
    # softmax is left to the loss (F.cross_entropy takes logits)
    return {"relu": [nn.ReLU()], "sigmoid": [nn.Sigmoid()], "softmax": [], "linear": []}[name]


LAYER_BUILDERS = {
    "Dense": _dense,
    "Conv2D": _conv,
    "MaxPooling2D": lambda nn, a, s: [nn.MaxPool2d(a["pool_size"])],
    "BatchNormalization": _batchnorm,
    "Dropout": lambda nn, a, s: [nn.Dropout(a["rate"])],
    "Flatten": lambda nn, a, s: [nn.Flatten()],
}

OPTIMIZERS = {
    "adam": lambda torch, params, lr: torch.optim.Adam(params, lr=lr, eps=1e-7),
    "sgd": lambda torch, params, lr: torch.optim.SGD(params, lr=lr),
}


def build_model(run: Run):
    """nn.Sequential from the layer table; shapes (Keras order) come from the table's trace."""
    from torch import nn

    modules = []
    for layer, in_shape, *_ in trace(run.model):
        modules += LAYER_BUILDERS[layer.kind](nn, layer.args, in_shape)
    return nn.Sequential(*modules)


def to_tensors(run: Run, data, device: str = "cpu"):
    """(x_train, y_train, x_test, y_test): float pixels / 255 in NCHW (CNN) or flat (MLP), on ``device``."""
    import torch

    shape = run.model.input_shape
    torch_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape

    def x(images):
        return (torch.from_numpy(images).float() / 255).reshape(len(images), *torch_shape).to(device)

    def y(labels):
        return torch.from_numpy(labels).long().to(device)

    return x(data.x_train), y(data.y_train), x(data.x_test), y(data.y_test)


def autocast(x, precision: str):
    import torch

    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_epoch(model, optimizer, x, y, batch_size, precision: str = "fp32"):
    """One pass over (x, y) in random batches; returns Keras-style (mean loss, accuracy)."""
    import torch
    import torch.nn.functional as F

    model.train()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for idx in torch.randperm(len(x), device=x.device).split(batch_size):
        xb, yb = x[idx], y[idx]
        with autocast(x, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def evaluate(model, x, y, batch_size, precision: str = "fp32"):
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode(), autocast(x, precision):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def train_run(run: Run, data, epochs: int, on_epoch, device: str = "cpu", precision: str = "fp32") -> None:
    import torch

    torch.manual_seed(run.seed)
    x_train, y_train, x_test, y_test = to_tensors(run, data, device)
    model = build_model(run).to(device)
    optimizer = OPTIMIZERS[run.optimizer](torch, model.parameters(), run.learning_rate)
    clock = EpochClock()
    for epoch in range(1, epochs + 1):
        clock.start()
        loss, accuracy = train_epoch(model, optimizer, x_train, y_train, run.batch_size, precision)
        val_loss, val_accuracy = evaluate(model, x_test, y_test, run.batch_size, precision)  # .item()s: synced
        on_epoch(epoch, clock.stop(), {"loss": loss, "accuracy": accuracy,
                                       "val_loss": val_loss, "val_accuracy": val_accuracy})


def main() -> None:
    args = parse_args("torch-plain")
    pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    versions = {"torch": torch.__version__} | ({"gpu": torch.cuda.get_device_name(0)} if args.device == "cuda" else {})
    main_loop(args, versions, lambda run, data, epochs, on_epoch: train_run(run, data, epochs, on_epoch,
                                                                           args.device, args.precision))


if __name__ == "__main__":
    main()
