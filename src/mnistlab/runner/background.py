"""``mnistlab run --background``: train at the lowest CPU priority, so that the user's other work on
the same cores keeps the machine (docs/PERFORMANCE.md, "Sharing the machine").

``nice`` alone does not do it. With the kernel's autogroups on, each session is its own scheduling
group and groups share the CPU equally whatever their processes' nice; torch's OpenMP threads
spin-wait, so beside a second busy process each of an MLP's many small parallel regions costs a
time slice (a step measured 38x slower). So the command is started again in a session of its own
(its autogroup, which it can lower without touching the user's terminal), at nice 19 with that
autogroup's nice 19, and with ``OMP_WAIT_POLICY=PASSIVE`` set before torch loads its thread pool.
This process waits for it, forwards Ctrl-C and termination to it, and exits with its status; if
this process is killed, the training process is ended too (its runs resume on the next ``run``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = "MNISTLAB_BACKGROUND"  # set in the restarted process's environment: the waiting parent's pid
AUTOGROUP = Path("/proc/self/autogroup")
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def in_background_child() -> bool:
    """Whether this process is the restarted, low-priority one."""
    return bool(os.environ.get(CHILD))


def restart(argv: list[str]) -> int:
    """Run ``mnistlab ARGV`` again in a new session at the lowest priority; its exit status (128+N
    when a signal N ended it, as a shell reports it)."""
    env = dict(os.environ, **{CHILD: str(os.getpid())})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP runtime loads
    child = subprocess.Popen([sys.executable, "-m", "mnistlab.cli", *argv], env=env, start_new_session=True)
    previous = {sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum)) for sig in FORWARDED}
    try:
        code = child.wait()  # PEP 475: a forwarded signal does not interrupt the wait
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def lower_priority() -> None:
    """In the restarted process: nice 19 for itself (and the workers it starts), and 19 for its own
    session's autogroup where the kernel has them; it ends when the waiting parent dies."""
    from .executors import die_with_parent
    os.nice(19 - os.nice(0))
    try:
        AUTOGROUP.write_text("19")
    except OSError:  # no autogroups (macOS, kernels without them): nice is then what counts
        pass
    parent = int(os.environ[CHILD])
    die_with_parent(parent)


def priority() -> dict[str, Any]:
    """This process's CPU priority as recorded with each run (its timings depend on it)."""
    record: dict[str, Any] = {"nice": os.nice(0) if hasattr(os, "nice") else None,
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:  # "/autogroup-123 nice 19"
        record["autogroup_nice"] = int(AUTOGROUP.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        record["autogroup_nice"] = None
    return record
