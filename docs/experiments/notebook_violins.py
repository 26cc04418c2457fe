"""Which arrays the seed notebooks' weight violin plots really show.

Each notebook plots `model.get_weights()[i]` for hand-picked indices i, labelled "Hidden Layer 1",
"Hidden Layer 2", ..., "Output Layer". Keras 2's `Network.get_weights()` concatenates each layer's
`weights` in layer order (keras/engine/network.py, 2.2.x: `for layer in self.layers: weights +=
layer.weights`): Dense and Conv2D give [kernel, bias], BatchNormalization [gamma, beta,
moving_mean, moving_variance]. This script rebuilds that list from the built-in studies' layers
(written as the notebooks wrote them) and prints what each notebook's indices pick.

    python docs/experiments/notebook_violins.py        # markdown table, as in docs/REPRODUCTION.md
"""
from __future__ import annotations

from pathlib import Path

import mnistlab
from mnistlab.spec import expand

STUDIES = Path(__file__).resolve().parents[2] / "studies"
KERAS_WEIGHTS = {"Dense": ("kernel", "bias"), "Conv2D": ("kernel", "bias"),
                 "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance")}

# notebook -> (study file, {model name prefix: the indices its violin cell passes to get_weights()})
# (line numbers in /work/shared/seeds/<notebook>.txt where each cell reads them)
NOTEBOOK_INDICES = {
    "000": ("seed000_mlp_depth_bn_dropout.toml", {   # every model: lines 235-237, 355-357, ...
        name: (0, 2, 4) for name in ("relu 2", "relu 3", "relu 5", "batch 2", "batch 3", "batch 5",
                                     "drop 2", "drop 3", "drop 5")}),
    "001": ("seed001_cnn_optimizers.toml", {         # lines 278-280, 448-450, 594-596, 799-801
        name: (0, 2, 4) for name in ("model 1", "model 2", "model 3", "model 4")}),
    "003": ("seed003_small_mlps.toml", {             # lines 151-153, 268-270, 404-407, 547-550, 696-701, 855-860
        "model 1 (64, 128)": (0, 1, 2), "model 1 (64, 128) bn drop": (0, 3, 4),
        "model 2 (64, 128, 256)": (0, 1, 2, 3), "model 2 (64, 128, 256) bn drop": (0, 1, 4, 7),
        "model 3 (32, 64, 128, 256, 512)": (0, 1, 2, 3, 4, 5),
        "model 3 (32, 64, 128, 256, 512) bn drop": (0, 1, 4, 5, 8, 9)}),
}


def keras_weight_names(calls) -> list[str]:
    """`model.get_weights()` as Keras 2 orders it, each entry named 'Dense 2 kernel' and so on (the
    last Dense layer: 'output kernel', 'output bias')."""
    names, seen = [], {}
    last_dense = max(i for i, call in enumerate(calls) if call.name == "Dense")
    for i, call in enumerate(calls):
        if call.name in KERAS_WEIGHTS:
            seen[call.name] = seen.get(call.name, 0) + 1
            layer = "output" if i == last_dense else f"{call.name} {seen[call.name]}"
            names += [f"{layer} {w}" for w in KERAS_WEIGHTS[call.name]]
    return names


def _indices(model: str, indices: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    if model in indices:
        return indices[model]
    matches = [picked for prefix, picked in indices.items() if model.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def violins(notebook: str) -> list[tuple[str, list[str], list[str]]]:
    """(model, the panels' labels, the array each panel shows) for one notebook's models."""
    study_file, indices = NOTEBOOK_INDICES[notebook]
    rows = []
    for run in expand(mnistlab.load_study(STUDIES / study_file)):
        picked = _indices(run.model, indices)
        if run.repeat or picked is None:
            continue
        order = keras_weight_names(run.layer_calls())
        labels = [f"Hidden Layer {i + 1}" for i in range(len(picked) - 1)] + ["Output Layer"]
        rows.append((run.model, labels, [order[i] for i in picked]))
    return rows


def table_rows() -> list[str]:
    """The markdown table docs/REPRODUCTION.md shows (tests/test_notebook_violins.py checks it is there)."""
    rows = ["| notebook | model | panel: the array it shows |", "|---|---|---|"]
    for notebook in NOTEBOOK_INDICES:
        for model, labels, shown in violins(notebook):
            panels = "; ".join(f"{label}: {array}" for label, array in zip(labels, shown))
            rows.append(f"| {notebook} | {model} | {panels} |")
    return rows


if __name__ == "__main__":
    print("\n".join(table_rows()))
