"""docs/experiments/notebook_violins.py: which arrays the seed notebooks' violin plots show, as
docs/REPRODUCTION.md reports it (Keras 2's get_weights() order rebuilt from the built-in studies)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "experiments" / "notebook_violins.py"


def _script():
    spec = importlib.util.spec_from_file_location("notebook_violins", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keras_order_is_layer_by_layer_with_batchnorm_statistics_in_place():
    from mnistlab.spec.calls import parse_call
    calls = [parse_call(t) for t in ("Dense(8)", "BatchNormalization()", "Dropout(0.5)", "Dense(10)")]
    assert _script().keras_weight_names(calls) == [
        "Dense 1 kernel", "Dense 1 bias", "BatchNormalization 1 gamma", "BatchNormalization 1 beta",
        "BatchNormalization 1 moving_mean", "BatchNormalization 1 moving_variance",
        "output kernel", "output bias"]


def test_only_the_plain_two_layer_model_of_seed000_plots_its_three_kernels():
    rows = {model.split(" (")[0]: shown for model, _, shown in _script().violins("000")}
    assert len(rows) == 9
    assert rows["relu 2"] == ["Dense 1 kernel", "Dense 2 kernel", "output kernel"]
    assert rows["relu 5"][2] == "Dense 3 kernel"   # labelled "Output Layer": the third hidden kernel
    for name in ("batch 2", "batch 5", "drop 3"):
        assert rows[name] == ["Dense 1 kernel", "BatchNormalization 1 gamma", "BatchNormalization 1 moving_mean"]


def test_seed003_panels_include_biases_and_every_notebook_model_is_covered():
    module = _script()
    seed003 = dict((model, shown) for model, _, shown in module.violins("003"))
    assert len(seed003) == 6 and seed003["model 1 (64, 128)"][1] == "Dense 1 bias"
    assert len(module.violins("001")) == 4


def test_reproduction_md_holds_the_scripts_table():
    rows = _script().table_rows()
    assert len(rows) == 2 + 9 + 4 + 6
    assert "\n".join(rows) in (ROOT / "docs" / "REPRODUCTION.md").read_text()
