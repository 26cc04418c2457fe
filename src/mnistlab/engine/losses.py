"""Losses by their Keras names. Every model the engine trains outputs logits: a softmax last layer
is left to the loss (as a stable log-softmax), a linear one is declared with ``from_logits=True``.

    loss = "categorical_crossentropy"                      # last layer Dense(10, activation='softmax')
    loss = "CategoricalCrossentropy(from_logits=True)"     # last layer Dense(10) (linear)

Any other pairing (a sigmoid or tanh output fed to cross-entropy, ``from_logits=True`` after a
softmax) is refused: Keras would train it, but not as the study's reader would assume.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LayerError, StudyError
from ..registry import Registry
from ..spec.calls import parse_call


@dataclass(frozen=True)
class Loss:
    name: str
    from_logits: bool


LOSSES = Registry("loss", StudyError, folded=True)
# Integer labels either way: the engine never one-hot encodes, so the two Keras spellings are one loss.
LOSSES.register("CategoricalCrossentropy", lambda from_logits=False: from_logits,
                aliases=("categorical_crossentropy",))
LOSSES.register("SparseCategoricalCrossentropy", lambda from_logits=False: from_logits,
                aliases=("sparse_categorical_crossentropy",))


def parse_loss(text: str) -> Loss:
    """``"categorical_crossentropy"`` or ``"CategoricalCrossentropy(from_logits=True)"`` -> :class:`Loss`."""
    call = parse_call(text, bare_name_ok=True)
    from_logits = LOSSES.build(call)
    if not isinstance(from_logits, bool):
        raise StudyError(f"{call.name} from_logits must be True or False, got {from_logits!r}")
    return Loss(LOSSES.lookup(call.name), from_logits)


def check_output(loss: Loss, output_activation: str, last_index: int, text: str) -> None:
    """Raise LayerError (naming the last layer) unless the model's output suits the loss."""
    if loss.from_logits and output_activation != "linear":
        raise LayerError(f"loss {loss.name}(from_logits=True) needs a linear last layer (logits), but it has "
                         f"activation={output_activation!r}; drop the activation, or use loss = "
                         f"\"{loss.name}()\" with a softmax last layer", last_index, None)
    if not loss.from_logits and output_activation != "softmax":
        raise LayerError(f"loss {text} expects probabilities from a softmax last layer, but it has "
                         f"activation={output_activation!r}; use activation='softmax', or a linear last "
                         f"layer with loss = \"{loss.name}(from_logits=True)\"", last_index, None)

