"""Training processes' priority and lifetime: ``mnistlab run --background`` trains at the lowest CPU
priority, so that the user's other work on the same cores keeps the machine (docs/PERFORMANCE.md,
"Sharing the machine"); a process started to train ends when the process that started it dies.

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

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import UsageError

CHILD = "MNISTLAB_BACKGROUND"  # set in the restarted process's environment: the waiting parent's pid
AUTOGROUP = Path("/proc/self/autogroup")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def background(argv: list[str] | None) -> int | None:
    """For ``run --background``. In the user's process: restart ``mnistlab ARGV`` (the command line
    ``main()`` parsed) and return its exit status. In the restarted process: lower its priority and
    return None, to go on training."""
    if os.environ.get(CHILD):
        lower_priority()
        return None
    if argv is None or not hasattr(os, "nice"):
        raise UsageError("--background needs the `mnistlab` command on a POSIX system")
    return restart(argv)


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


def die_with_parent(parent: int) -> None:
    """Make this process end when the process that started it dies (a killed ``mnistlab run`` must not
    leave workers or a background child training): Linux's PR_SET_PDEATHSIG, elsewhere a thread that watches."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        watched = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        watched = False
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)
    if not watched:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # a claimed run stays "running" with a dead owner: the next `run` resumes it
