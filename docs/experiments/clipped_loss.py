"""Test loss of a study's trained runs computed two ways, to settle which Keras the seed notebooks ran:

- from logits (mnistlab, tf.keras, Keras >= 2.2.5 with a softmax output): -log_softmax(z)[y];
- from clipped probabilities (Keras <= 2.2.4's categorical_crossentropy): p = softmax(z) in float32,
  clipped to [1e-7, 1 - 1e-7], then -log(p[y]).

    python docs/experiments/clipped_loss.py studies/seed000_mlp_depth_bn_dropout.toml --store ~/.cache/mnistlab/repro/repro.db
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from mnistlab.api import Store, load_model, read_study
from mnistlab.data import load_tensors
from mnistlab.engine.fit import data_shape, predict

EPSILON = 1e-7  # Keras' K.epsilon()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("study")
    p.add_argument("--store", required=True)
    args = p.parse_args()
    store = Store(args.store)
    name = read_study(args.study).name
    print("| model | test loss from logits | test loss from clipped probabilities | test acc |")
    print("|---|---|---|---|")
    for run in store.runs(study=name):
        if run["status"] != "done":
            continue
        model, spec = load_model(store, run["id"])
        data = load_tensors(spec.dataset, image=data_shape(spec), test_size=spec.test_size, train_size=1)
        with torch.no_grad():
            logits = predict(model, data.x_test)
            penalty = float(model.regularization_loss())
            exact = F.cross_entropy(logits, data.y_test).item() + penalty
            probs = logits.float().softmax(1).clamp(EPSILON, 1 - EPSILON)
            clipped = -probs.gather(1, data.y_test[:, None]).log().mean().item() + penalty
            acc = (logits.argmax(1) == data.y_test).float().mean().item()
        print(f"| {run['model']} | {exact:.4f} | {clipped:.4f} | {acc:.4f} |")


if __name__ == "__main__":
    main()
