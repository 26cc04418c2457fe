"""Exit codes scripts can trust: 0 all done; 1 some runs failed or diverged (the table still
printed, failed runs not counted as trained); 2 bad input; 130 on Ctrl-C, saying what was kept."""

from __future__ import annotations

import signal
import subprocess

from conftest import tiny_study
from hostile import CLI, TWO, finals, invoke, train, write
from mnistlab.store import Store


def test_exit_0_when_all_done_and_2_on_bad_input(tmp_path, capsys, mnist):
    path = write(tmp_path, TWO)
    code, out, err = invoke(capsys, "run", path)
    assert code == 0 and "trained 2," in err and "study two" in out
    assert invoke(capsys, "run", path)[0] == 0
    bad = write(tmp_path, TWO.replace("Dense(64", "Dence(64"), name="bad.toml")
    code, _, err = invoke(capsys, "run", bad)
    assert code == 2 and "unknown layer 'Dence'" in err and "Traceback" not in err


def test_exit_1_when_a_run_diverged_with_the_table_printed(tmp_path, capsys, mnist):
    path = write(tmp_path, TWO.replace('name = "a"', 'name = "a"\noptimizer = "SGD(learning_rate=1e30)"'))
    code, out, err = invoke(capsys, "run", path)
    assert code == 1 and "study two" in out and "diverg" in out and "diverged 1" in err
    assert invoke(capsys, "run", path, "-q")[0] == 1  # still so on the next run, until it trains well


def test_failed_runs_exit_1_and_are_not_counted_as_trained(tmp_path, capsys, monkeypatch, mnist):
    import mnistlab.runner.driver as runner
    real = runner.fit

    def flaky(spec, *args, **kwargs):
        if spec.model == "a":
            raise RuntimeError("disk on fire")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", flaky)
    path = write(tmp_path, TWO)
    code, out, err = invoke(capsys, "run", path, "--no-group")
    assert code == 1 and "study two" in out
    assert "trained 1, resumed 0" in err and "failed 1" in err
    monkeypatch.setattr(runner, "fit", real)
    code, _, err = invoke(capsys, "run", path, "--retry-failed")
    assert code == 0 and "trained 1," in err


def test_ctrl_c_exits_130_says_what_was_kept_and_a_rerun_finishes(tmp_path, mnist):
    models = {"a": ["Dense(64, activation='relu')", "Dense(10, activation='softmax')"],
              "b": ["Dense(32, activation='relu')", "Dense(10, activation='softmax')"]}
    path = write(tmp_path, tiny_study(models=models, epochs=4, train_size=6000, test_size=500))
    # SIGINT as a terminal's Ctrl-C delivers it, even when the suite itself runs in the background
    # of a non-interactive shell (which starts its children with SIGINT ignored)
    proc = subprocess.Popen([*CLI, "run", str(path), "--no-group"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if " epoch 1/4 " in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "Traceback" not in rest
    said = [line for line in rest.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1 and "of 2 runs done and kept" in said[0] and "after epoch" in said[0]
    assert said[0].endswith("run the same command again to resume")
    assert "study tiny" in proc.stdout.read()  # the table as it stands
    kept = [r for r in Store.for_study(path, read_only=True).runs() if r["status"] == "running"]
    assert kept and all(r["owner"] is None and r["epochs_done"] >= 1 for r in kept)
    outcome = train(path)
    assert [r["id"] for r in kept] == outcome.resumed
    assert all(f["status"] == "done" and f["epochs"] == [1, 2, 3, 4] for f in finals(path).values())
