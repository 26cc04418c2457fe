"""mnistlab: neural-network ablation studies on MNIST-family data.

>>> import mnistlab
>>> study = mnistlab.load_study("studies/quick.toml")    # validated, every layer checked
>>> outcome = mnistlab.run(study)                        # trains what is not done yet
>>> mnistlab.Store.for_study("studies/quick.toml").runs(study=study.name)

Attributes are imported lazily, so ``import mnistlab.store`` or ``mnistlab.report`` never loads torch.
"""

from .version import __version__
__all__ = ["Store", "__version__", "load_study", "run"]


def __getattr__(name: str):
    if name in ("load_study", "run"):
        from . import api
        return getattr(api, name)
    if name == "Store":
        from .store import Store
        return Store
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
