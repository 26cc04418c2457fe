"""EngineOptions and RunOptions: built at the edge, passed down, recorded as used; the registry binder;
group_key no longer hides bugs."""

from __future__ import annotations

import pytest

from conftest import MLP, tiny_study
from mnistlab.engine import group as group_module
from mnistlab.engine.group import group_key
from mnistlab.engine.onednn import available
from mnistlab.engine.options import EngineOptions
from mnistlab.errors import LayerError, MnistlabError, OptimizerError, OptionsError, StudyError
from mnistlab.registry import ARGUMENT_ALIASES, Registry
from mnistlab.runner.options import RunOptions
from mnistlab.spec import RunSpec, parse_call

from test_runner import mnistlab, store_of


def test_environment_is_read_at_the_edge_only():
    assert EngineOptions.from_environment({}) == EngineOptions()
    env = {"MNISTLAB_GEMM": "mkl", "MNISTLAB_FAST": "0"}
    options = EngineOptions.from_environment(env)
    assert options.dense_gemm == "torch" and not options.graph_free_mlp_step
    assert EngineOptions.from_environment(env, dense_gemm="onednn").dense_gemm == "onednn"  # flags win


def test_resolved_says_what_applies_here():
    used = EngineOptions().resolved()
    assert used.dense_gemm == ("onednn" if available() else "torch")
    assert EngineOptions(dense_gemm="torch").resolved().graph_free_mlp_step is False  # needs oneDNN
    assert EngineOptions(device="cuda", channels_last=True).resolved().channels_last is False
    record = EngineOptions(threads=1).record()
    assert record["threads"] == 1 and record["numerics"] >= 2 and record["dense_gemm"] == used.dense_gemm


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "device='tpu' is unknown; use one of cpu, cuda"),
    ({"dense_gemm": "blas"}, "dense_gemm='blas' is unknown"),
    ({"threads": 0}, "threads=0 must be at least 1"),
])
def test_bad_engine_options_are_one_line_errors(kwargs, message):
    with pytest.raises(OptionsError, match=message):
        EngineOptions(**kwargs)


def test_bad_run_options():
    with pytest.raises(OptionsError, match="executor 'spark' is unknown"):
        RunOptions(executor="spark")
    with pytest.raises(OptionsError, match="--workers must be at least 1"):
        RunOptions(workers=0)


def test_a_run_records_the_options_it_used(write_study, mnist, monkeypatch):
    path = write_study(tiny_study(models={"a": MLP}, epochs=1))
    monkeypatch.setenv("MNISTLAB_GEMM", "mkl")  # read by the CLI at the edge
    mnistlab("run", path, "-q")
    env = store_of(path).runs(study="tiny")[0]["environment"]
    assert env["dense_gemm"] == "torch" and env["graph_free_mlp_step"] is False and env["numerics"] >= 2


def test_run_threads_sets_and_records_each_processs_threads(write_study, mnist):
    """There was no way to train inline on fewer threads than cores (`-j N` gives cores/N each): a
    second study beside a running one, or a run resumed as it began, needed Python."""
    import os
    path = write_study(tiny_study(models={"a": MLP}, epochs=1))
    done = mnistlab("run", path, "--threads", "1", "--no-table")
    assert "on 1 thread" in done.stderr  # the plan's estimate is timed at 1 thread too
    assert store_of(path).runs(study="tiny")[0]["environment"]["threads"] == 1
    if (os.cpu_count() or 1) >= 2:
        pool = write_study(tiny_study(name="pool", models={"a": MLP, "b": ["Dense(10, activation='softmax')"]},
                                      epochs=2), name="pool.toml")  # -j 2 gives cores/2 each; --threads overrides
        mnistlab("run", pool, "-j", "2", "--threads", "2", "-q")
        assert [r["environment"]["threads"] for r in store_of(pool).runs(study="pool")] == [2, 2]
    bad = mnistlab("run", path, "--threads", "0", check=False)
    assert bad.returncode == 2 and "--threads" in bad.stderr and "Traceback" not in bad.stderr


def test_every_user_error_derives_from_one_root():
    for cls in (StudyError, LayerError, OptimizerError, OptionsError):
        assert issubclass(cls, MnistlabError)


def test_registry_binds_like_keras_with_aliases_declared_once():
    registry = Registry("thing", StudyError, folded=True)
    registry.register("SGD", lambda learning_rate=0.01, momentum=0.0: None, aliases=("gradient_descent",))
    assert "sgd" in registry and "GradientDescent" in registry and "adam" not in registry
    assert registry.bind(parse_call("SGD(0.1, momentum=0.9)")) == {"learning_rate": 0.1, "momentum": 0.9}
    assert ARGUMENT_ALIASES["lr"] == "learning_rate"
    assert registry.bind(parse_call("SGD(lr=0.5)")) == {"learning_rate": 0.5}
    with pytest.raises(StudyError, match="got 'learning_rate' twice \\(lr is another name for learning_rate\\)"):
        registry.bind(parse_call("SGD(lr=0.5, learning_rate=0.1)"))
    with pytest.raises(StudyError, match="unknown thing 'Adma'"):
        registry.lookup("Adma")
    with pytest.raises(StudyError, match="unexpected argument 'momentun'; did you mean 'momentum'"):
        registry.bind(parse_call("SGD(momentun=0.9)"))


def _spec(layers=MLP):
    return RunSpec(study="t", model="m", layers=tuple(layers), dataset="mnist", epochs=1, batch_size=32,
                   optimizer="adam()", loss="categorical_crossentropy", validation="test", train_size=100,
                   test_size=100, seed=0)


def test_group_key_lets_bugs_through(monkeypatch):
    assert group_key(_spec()) is not None
    assert group_key(_spec(["Dense(10, activation='nope')"])) is None  # a bad study: check_study reports it

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(group_module, "build_model", broken)
    group_module._layout.cache_clear()  # layouts are cached by layer texts
    with pytest.raises(RuntimeError, match="a bug in the engine"):
        group_key(_spec(["Dense(48, activation='relu')", "Dense(10, activation='softmax')"]))
    group_module._layout.cache_clear()
