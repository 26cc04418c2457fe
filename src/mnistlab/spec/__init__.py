"""Study files as plain data, no torch: the safe Keras-call parser (``calls``), the study schema and
its expansion into frozen, content-addressed :class:`RunSpec` s (``schema``).

>>> runs = expand(load_study("studies/quick.toml"))
"""

from ..errors import StudyError
from .calls import Call, did_you_mean, parse_call
from .schema import (MAX_RUNS, ModelEntry, RunSpec, Study, TrainSettings, build_study, count_runs, derive_seed,
                     expand, load_study, parse_study)

__all__ = ["MAX_RUNS", "Call", "ModelEntry", "RunSpec", "Study", "StudyError", "TrainSettings", "build_study",
           "count_runs", "derive_seed",
           "did_you_mean", "expand", "load_study", "parse_call", "parse_study"]
