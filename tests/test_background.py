"""``mnistlab run --background``: the training process runs at nice 19 in a session (autogroup) of its
own with OpenMP threads that sleep instead of spinning, records that with each run, leaves the
caller's own priority alone, and still stops on Ctrl-C with its runs kept (docs/PERFORMANCE.md,
"Sharing the machine", for why plain ``nice`` was not enough)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import tiny_study
from hostile import CLI, train, write
from mnistlab.processes import priority
from mnistlab.store import Store

pytestmark = pytest.mark.skipif(not hasattr(os, "nice"), reason="POSIX only")
AUTOGROUPS = Path("/proc/self/autogroup").exists()


def _environments(path):
    return [r["environment"] for r in Store.for_study(path, read_only=True).runs()]


def test_background_trains_at_lowest_priority_and_leaves_the_caller_alone(tmp_path, mnist):
    path = write(tmp_path)
    mine = priority()
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([*CLI, "run", str(path), "--background", "-q"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "study tiny" in done.stdout  # the child's table reaches the caller's terminal
    [recorded] = _environments(path)
    assert recorded["priority"]["nice"] == 19
    assert recorded["priority"]["omp_wait_policy"] == "PASSIVE"
    if AUTOGROUPS:
        assert recorded["priority"]["autogroup_nice"] == 19
    assert priority() == mine  # the caller's own process and terminal session keep their priority
    report = tmp_path / "report.html"
    made = subprocess.run([*CLI, "report", str(path), "-o", str(report)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "low priority (nice 19)" in report.read_text()  # its timings were taken so


def test_without_background_a_run_records_the_priority_it_had(tmp_path, mnist):
    path = write(tmp_path)
    train(path)
    [recorded] = _environments(path)
    assert recorded["priority"]["nice"] == os.nice(0)
    assert recorded["priority"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")


def test_ctrl_c_reaches_the_background_training_and_its_runs_resume(tmp_path, mnist):
    path = write(tmp_path, tiny_study(epochs=4, train_size=6000, test_size=500))
    proc = subprocess.Popen([*CLI, "run", str(path), "--background"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if " epoch 1/4 " in line:
            proc.send_signal(signal.SIGINT)  # to the waiting parent only, as a terminal's Ctrl-C
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    assert sum(line.startswith("interrupted") for line in rest.splitlines()) == 1  # said once, by the child
    [kept] = Store.for_study(path, read_only=True).runs()
    assert kept["status"] == "running" and kept["owner"] is None and kept["epochs_done"] >= 1
    assert train(path).resumed == [kept["id"]]


def test_killing_the_waiting_parent_ends_the_training_too(tmp_path, mnist):
    path = write(tmp_path, tiny_study(epochs=30, train_size=6000, test_size=500))
    proc = subprocess.Popen([*CLI, "run", str(path), "--background"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if " epoch 1/30 " in line:
            break
    [run] = Store.for_study(path, read_only=True).runs()
    child = int(run["owner"].rsplit(":", 1)[-1])
    assert child != proc.pid  # the training runs in the restarted process
    proc.kill()  # no chance to forward anything: the kernel's parent-death signal ends the child
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)
    [run] = Store.for_study(path, read_only=True).runs()
    assert run["status"] == "running" and run["epochs_done"] < 30  # resumable, as after any kill


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; its reaper may be slow in a container


def test_background_outside_the_command_line_is_a_one_line_usage_error(tmp_path, mnist):
    """`run --background` restarts the command line main() parsed; called any other way (typer's
    CliRunner here, as a host program might) there is none to restart: exit 2, nothing trained."""
    from typer.testing import CliRunner

    from mnistlab import cli
    from mnistlab.errors import UsageError
    path = write(tmp_path)
    with pytest.raises(SystemExit):
        cli.main()  # an earlier command line in this process (pytest's own argv, refused) is not restarted later
    result = CliRunner().invoke(cli.app, ["run", str(path), "--background"])
    assert isinstance(result.exception, UsageError) and UsageError.exit_code == 2
    assert str(result.exception) == "--background needs the `mnistlab` command on a POSIX system"
    assert not (tmp_path / "mnistlab.db").exists()
