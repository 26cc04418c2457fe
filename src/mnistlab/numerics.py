"""The engine-numerics version: it changes when the engine computes different numbers for the same
spec (and so the same run id). Every run records the version it was trained with (in its stored
environment; runs from before versions were recorded are version 1). Tables, reports and
comparisons never pool runs of different versions: they keep them apart and say so.

What a bump means for an old store: its finished runs stay valid and are shown under their own
version; `mnistlab run` trains nothing again (same ids), so to compare like with like, train the
old configurations again in a fresh store, or with one more repeat.

History:
- 1: everything before 2026-12-02: Flatten in torch's (C, H, W) order; a last layer whose
  activation is not softmax fed to cross-entropy as if it gave logits.
- 2: Flatten in Keras' (H, W, C) order (a CNN's Dense kernel after Flatten has Keras' layout); the
  loss is the study's, a non-softmax output needs ``from_logits=True`` with a linear last layer.
"""

NUMERICS = 2


def of(environment: dict | None) -> int:
    """The version a run was trained with, from its stored environment (1 when not recorded)."""
    return int((environment or {}).get("numerics", 1))
