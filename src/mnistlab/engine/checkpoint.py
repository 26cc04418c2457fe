"""The checkpoint format both engines write and read: everything a run needs to continue after an
epoch as if never stopped, flattened into named arrays plus JSON metadata for one safetensors file.

>>> arrays, metadata = checkpoint_to_arrays(ck); checkpoint_from_arrays(arrays, metadata).epoch == ck.epoch
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Checkpoint:
    """Everything needed to continue after ``epoch`` as if never stopped."""

    epoch: int  # epochs completed
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    torch_rng: torch.Tensor  # the run's dropout and noise generator
    shuffle_rng: torch.Tensor  # the per-run shuffling generator
    history: list[dict[str, float]]
    seconds: float
    step: int | None = None  # optimizer steps taken: the schedule's position (None: epoch x batches, older files)
    training: dict[str, Any] = field(default_factory=dict)  # callbacks.Training.state(): lr, counters, best values
    kept: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # best weights, by callback index
    # how each stretch of its epochs was computed: [{"from_epoch": 1, "threads": 2, ...}, {"from_epoch": 8, ...}]
    # (runner.driver.stretches); empty in files written before it was kept
    trained_with: list[dict[str, Any]] = field(default_factory=list)


def capture(epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator,
            noise: torch.Generator, history: list[dict[str, float]], seconds: float, step: int | None = None,
            training: Any = None) -> Checkpoint:
    """A plain run's state after ``epoch`` epochs, copied (training goes on changing the originals);
    ``training`` is the run's :class:`~.callbacks.Training` (its best weights are copies already)."""
    state, kept = training.state() if training is not None else ({}, {})
    return Checkpoint(epoch=epoch, model={k: v.detach().clone() for k, v in model.state_dict().items()},
                      optimizer=copy.deepcopy(optimizer.state_dict()), torch_rng=noise.get_state(),
                      shuffle_rng=shuffle.get_state(), history=list(history), seconds=seconds, step=step,
                      training=state, kept=dict(kept))


def checkpoint_to_arrays(ck: Checkpoint) -> tuple[dict[str, "np.ndarray"], dict[str, str]]:
    """Flatten a checkpoint into named arrays plus JSON metadata, for a safetensors file. The arrays
    share memory with the checkpoint's tensors (its own copies already): write them before changing it."""
    arrays = {f"model.{k}": v.detach().cpu().numpy() for k, v in ck.model.items()}
    scalars: dict[str, Any] = {}
    for index, state in ck.optimizer["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                arrays[f"optimizer.{index}.{name}"] = value.detach().cpu().numpy()
            else:
                scalars[f"{index}.{name}"] = value
    arrays["rng.torch"] = ck.torch_rng.numpy()
    arrays["rng.shuffle"] = ck.shuffle_rng.numpy()
    for index, weights in ck.kept.items():
        arrays.update({f"kept.{index}.{k}": v.detach().cpu().numpy() for k, v in weights.items()})
    metadata = {"epoch": str(ck.epoch), "seconds": repr(ck.seconds), "history": json.dumps(ck.history),
                "param_groups": json.dumps(ck.optimizer["param_groups"]), "scalars": json.dumps(scalars),
                "training": json.dumps(ck.training),  # inf (a best value not yet set) is JSON's Infinity
                "trained_with": json.dumps(ck.trained_with)}
    if ck.step is not None:
        metadata["step"] = str(ck.step)
    return arrays, metadata


def checkpoint_from_arrays(arrays: dict[str, "np.ndarray"], metadata: dict[str, str]) -> Checkpoint:
    state: dict[int, dict[str, Any]] = {}
    for key, value in arrays.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = torch.from_numpy(value.copy())
    for key, value in json.loads(metadata["scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    kept: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        if key.startswith("kept."):
            _, index, name = key.split(".", 2)
            kept.setdefault(index, {})[name] = torch.from_numpy(value.copy())
    return Checkpoint(
        epoch=int(metadata["epoch"]),
        model={k[len("model."):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("model.")},
        optimizer={"state": state, "param_groups": json.loads(metadata["param_groups"])},
        torch_rng=torch.from_numpy(arrays["rng.torch"].copy()),
        shuffle_rng=torch.from_numpy(arrays["rng.shuffle"].copy()),
        history=json.loads(metadata["history"]), seconds=float(metadata["seconds"]),
        step=int(metadata["step"]) if "step" in metadata else None,
        training=json.loads(metadata.get("training", "{}")), kept=kept,
        trained_with=json.loads(metadata.get("trained_with", "[]")))
