"""Every error a user should see as one line derives from :class:`MnistlabError`; the CLI catches
that one class, prints its message and exits with its ``exit_code`` (2: bad input or a store or
dataset that cannot be used). Anything else is a bug and keeps its traceback.

>>> raise StudyError("studies/x.toml:4: model 'mlp': epochs must be at least 1, got 0")
"""

from __future__ import annotations


class MnistlabError(Exception):
    """Root of mnistlab's user-facing errors. ``str()`` is one line: where, what, and what would be right."""

    exit_code = 2


class UsageError(MnistlabError):
    """Bad command-line input: an option that cannot be used as given, and what would be right."""


class StudyError(MnistlabError, ValueError):
    """A study file (or a value given for one) is wrong: ``FILE:LINE: where: what, and what would be right``."""


class CallSyntaxError(MnistlabError, ValueError):
    """A layer, optimizer or other Keras call string is not a plain call with literal arguments."""


class LayerError(MnistlabError, ValueError):
    """A model that cannot be built; ``index`` is 0-based (None: the whole model), ``str()`` counts from 1."""

    def __init__(self, message: str, index: int | None = None, name: str | None = None):
        self.message, self.index, self.name = message, index, name
        where = "" if index is None else f"layer {index + 1}" + (f" ({name})" if name else "") + ": "
        super().__init__(where + message)


class OptimizerError(MnistlabError, ValueError):
    """An optimizer call is unknown or has bad arguments."""


class DataError(MnistlabError):
    """A dataset could not be fetched, verified or loaded. The message is always one line."""

    def __init__(self, message: object):
        super().__init__(" ".join(str(message).split()))


class StoreError(MnistlabError, RuntimeError):
    """The store cannot be used: one line naming the database and what to do."""


class NoStore(StoreError):
    """A store opened only to read does not exist (nothing has been run against it yet)."""


class DamagedArtifact(StoreError):
    """A recorded artifact file is missing, or its bytes are not those recorded (SHA-256): one run's
    weights or checkpoint, not the whole store. ``mnistlab run --retry-failed`` retrains such a run."""


class ImageError(MnistlabError, ValueError):
    """An image given to ``predict`` cannot be read as a 28x28 digit."""


class ReportError(MnistlabError):
    """A report or export cannot be written where asked."""


class OptionsError(MnistlabError, ValueError):
    """An engine or run option (flag, study setting or environment variable) has an unusable value."""
