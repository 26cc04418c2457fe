"""mnistlab: neural-network ablation studies on MNIST-family data.

>>> import mnistlab
>>> study = mnistlab.load_study("studies/quick.toml")    # validated, every layer checked
>>> results = mnistlab.run(study)                        # trains what is not done yet
>>> results.table()                                      # pandas; in Jupyter, the report's table
>>> study = mnistlab.study(name="widths", models={"mlp": ["Dense(64, activation='relu')",
...                                                      "Dense(10, activation='softmax')"]})
>>> mnistlab.results("studies/quick.toml").runs()       # results already stored, nothing trained

Attributes are imported lazily, so ``import mnistlab``, ``mnistlab.store`` or ``mnistlab.report`` never
loads torch (nor pandas, until a DataFrame is asked for).
"""

from .version import __version__
__all__ = ["Results", "Store", "__version__", "load_study", "results", "run", "study"]


def __getattr__(name: str):
    if name in ("load_study", "run", "study"):
        from . import api
        return getattr(api, name)
    if name == "results":  # opens stored results; needs neither torch nor the api module
        from .notebook import open_results
        return open_results
    if name == "Results":
        from .notebook import Results
        return Results
    if name == "Store":
        from .store import Store
        return Store
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
