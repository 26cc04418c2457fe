"""The benchmark harness: mnistlab and its peers on the same workloads, side by side.

From the repository root, with the project venv (peers' venvs: ``bash benchmarks/setup_peers.sh``):

    .venv/bin/python -m benchmarks.run                                  # everything, 3 reps x 3 epochs
    .venv/bin/python -m benchmarks.run --only W1 --epochs 2 --reps 1    # a quick look
    .venv/bin/python -m benchmarks.run --only S2 --epochs 2 --repeats 1 # sweep, extrapolated
    .venv/bin/python -m benchmarks.run --write docs/PERFORMANCE.md      # also update the doc
    .venv/bin/python -m benchmarks.run --only W1,W3,S2 --contenders mnistlab,torch-plain --device cuda
    .venv/bin/python -m benchmarks.run --only W3 --contenders mnistlab --precision bf16

Each contender runs as its own subprocess (so peak RSS is per process), contenders alternate
within a repetition and the order rotates between repetitions. The first epoch of every run
(compilation, warm-up) is excluded from the steady s/epoch; the limit is the matmul/conv FLOPs of
an epoch (``workloads.epoch_flops``) at the measured sgemm peak. Sweeps (S1, S2) are measured with
``--epochs`` epochs per run and extrapolated to the notebook's epoch count:
run ≈ setup + first epoch + (epochs - 1) x steady epoch, scaled up when ``--repeats`` measures
fewer repeats than the sweep has.

The machine may be shared: before each process the harness waits for other work to stop
(``--quiet-wait``), every epoch reports the cores other processes took meanwhile, and a process
disturbed beyond ``--contention`` cores is run again (``--retries``); the table shows the worst
disturbance kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.machine import busy_cpu_seconds, wait_for_quiet
from benchmarks.tables import header, per, table, workload_flops, write_section
from benchmarks.workloads import WORKLOADS, Workload, select_runs

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / "benchmarks" / ".venvs"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"  # torch-plain and mnistlab run here
if not PROJECT_PYTHON.exists():
    PROJECT_PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class Contender:
    name: str
    python: Path  # interpreter of the venv the peer runs in
    module: str  # peer module, run with -m from the repository root
    env: dict = field(default_factory=dict)

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if not self.python.exists():
            return f"no {self.python.relative_to(ROOT)}; run: bash benchmarks/setup_peers.sh {self.name}"
        return None


CONTENDERS = {c.name: c for c in (
    Contender("mnistlab", PROJECT_PYTHON, "benchmarks.peers.mnistlab_peer"),
    Contender("torch-plain", PROJECT_PYTHON, "benchmarks.peers.torch_peer"),
    Contender("keras-jax", VENVS / "keras-jax" / "bin" / "python", "benchmarks.peers.keras_peer",
              {"KERAS_BACKEND": "jax"}),
    Contender("keras-tf", VENVS / "keras-tf" / "bin" / "python", "benchmarks.peers.keras_peer",
              {"KERAS_BACKEND": "tensorflow"}),
)}


# ---- measuring -------------------------------------------------------------------------------

def sgemm_peak(threads: int, n: int = 2048, tries: int = 7, device: str = "cpu",
               precision: str = "fp32") -> dict[str, float]:
    """Best GFLOP/s of an n x n matmul on `threads` threads (after two warm-up calls), by the two
    GEMMs torch's CPU wheel carries: torch.mm (MKL, which takes its AVX2 path on AMD CPUs) and oneDNN
    (``torch.ops.mkldnn._linear_pointwise``, which uses AVX-512 where the CPU has it). The larger is the
    machine's peak for the tables. On CUDA: torch.mm on the GPU (n = 8192), in the precision measured
    (fp32 without TF32, as torch's default; bf16 on the tensor cores)."""
    import torch

    torch.set_num_threads(threads)
    if device == "cuda":
        n, dtype = 8192, torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        calls = {f"cuBLAS {precision}": lambda: (torch.mm(a, b), torch.cuda.synchronize())}
    else:
        a, b = torch.randn(n, n), torch.randn(n, n)
        calls = {"torch.mm (MKL)": lambda: torch.mm(a, b)}
        if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            calls["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    peaks = {}
    for name, call in calls.items():
        best = float("inf")
        for i in range(tries + 2):
            t = time.perf_counter()
            call()
            if i >= 2:
                best = min(best, time.perf_counter() - t)
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class PeerRun:
    """One subprocess of one contender on one workload: its JSON lines, or why it failed."""

    contender: str
    lines: list[dict]
    error: str | None = None
    process_others: float = 0.0  # cores other processes kept busy, on average, while it ran
    sweep: bool = False  # first epochs are timed too (sweeps extrapolate from them)

    @property
    def others(self) -> float:
        """Cores other processes took: the worst timed epoch (peers that report it), else the
        process average."""
        epochs = self.epochs()
        timed = epochs if self.sweep else [e for e in epochs if e["epoch"] >= 2] or epochs
        if timed and all("others" in e for e in timed):
            return max(e["others"] for e in timed)
        return self.process_others

    def epochs(self) -> list[dict]:
        return [line for line in self.lines if "epoch" in line]

    def event(self, name: str) -> list[dict]:
        return [line for line in self.lines if line.get("event") == name]


def run_peer(c: Contender, w: Workload, args: argparse.Namespace) -> PeerRun:
    """Run one peer process to the end and parse what it printed."""
    cmd = [str(c.python), "-m", c.module, "--workload", w.name, "--epochs", str(per(args, "epochs", w)),
           "--threads", str(args.threads), "--peer", c.name]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    if args.data:
        cmd += ["--data", str(args.data)]
    if (args.device, args.precision) != ("cpu", "fp32"):  # keras peers refuse what they do not measure
        cmd += ["--device", args.device, "--precision", args.precision]
    wait_for_quiet(args.quiet_wait)
    busy, mine, wall = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **c.env}, capture_output=True,
                              text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return PeerRun(c.name, [], f"timed out after {args.timeout} s")
    others = ((busy_cpu_seconds() - busy) - (children_cpu_seconds() - mine)) / (time.monotonic() - wall)
    lines = json_lines(proc.stdout)
    if proc.returncode != 0 or not any(line.get("event") == "end" for line in lines):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return PeerRun(c.name, lines, f"exit {proc.returncode}: {tail}")
    return PeerRun(c.name, lines, process_others=max(0.0, others), sweep=w.is_sweep)


def json_lines(stdout: str) -> list[dict]:
    """The peer's report lines; anything else a framework printed to stdout is ignored."""
    lines = []
    for text in stdout.splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and "peer" in line:
            lines.append(line)
    return lines


def measure(w: Workload, contenders: list[Contender], args, unavailable: dict) -> list[PeerRun]:
    """`args.reps` rounds of every available contender, order rotated each round."""
    done: list[PeerRun] = []
    reps = per(args, "reps", w)
    for rep in range(reps):
        order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
        for c in order:
            if c.name in unavailable or (c.name, w.name) in unavailable:
                continue
            result = run_quietly(c, w, args, f"[{w.name} rep {rep + 1}/{reps}] {c.name}")
            if result.error:
                # a peer that never reached an epoch is broken everywhere; else only here
                unavailable[c.name if not result.epochs() else (c.name, w.name)] = result.error
            else:
                done.append(result)
    return done


def run_quietly(c: Contender, w: Workload, args, tag: str) -> PeerRun:
    """Run a peer; while other processes took more than `args.contention` cores during it,
    run it again (at most `args.retries` times) and keep the least disturbed attempt."""
    attempts: list[PeerRun] = []
    for attempt in range(args.retries + 1):
        t = time.perf_counter()
        result = run_peer(c, w, args)
        progress(f"{tag}: {result.error or 'ok'} ({time.perf_counter() - t:.0f} s, "
                 f"others' load {result.others:.2f} cores)")
        attempts.append(result)
        if result.error or result.others <= args.contention:
            break
        if attempt < args.retries:
            progress(f"{tag}: disturbed by other processes, running it again")
    return min(attempts, key=lambda r: (r.error is not None, r.others))


# ---- summarising -----------------------------------------------------------------------------

def steady_and_first(epochs: list[dict]) -> tuple[list[float], list[float]]:
    """Epoch seconds split into first epochs (excluded) and steady ones (epoch >= 2)."""
    first = [e["seconds"] for e in epochs if e["epoch"] == 1]
    steady = [e["seconds"] for e in epochs if e["epoch"] >= 2]
    return steady, first


def sweep_estimate(run: PeerRun, w: Workload, measured_runs: int) -> float:
    """Seconds the whole sweep would take at the notebook's epoch count, from one peer process."""
    nominal = max(r.epochs for r in w.runs)
    total = 0.0
    for end in run.event("run_end"):
        epochs = [e for e in run.epochs() if e["run"] == end["run"]]
        steady, first = steady_and_first(epochs)
        setup = end["seconds"] - sum(e["seconds"] for e in epochs)
        per_epoch = statistics.median(steady) if steady else first[0]
        total += setup + first[0] + (nominal - 1) * per_epoch
    return total * len(w.runs) / measured_runs


@dataclass
class Row:
    contender: str
    seconds: float  # steady s/epoch (single run) or the extrapolated sweep (sweeps)
    spread: tuple[float, float]  # min and max over the repetitions
    first: float  # median first-epoch seconds, or the measured sweep seconds for sweeps
    flops: float  # per epoch (single run) or for the whole sweep
    rss_mib: float
    val_accuracy: float
    n: int  # steady epochs pooled (single run) or repetitions (sweeps)
    others: float  # the most cores other processes used during one of the repetitions


def summarise(w: Workload, runs: list[PeerRun], args) -> list[Row]:
    rows = []
    for name in dict.fromkeys(r.contender for r in runs):
        mine = [r for r in runs if r.contender == name]
        rss = statistics.median(r.event("end")[0]["max_rss_mib"] for r in mine)
        acc = statistics.median(r.epochs()[-1]["val_accuracy"] for r in mine)
        others = max(r.others for r in mine)
        if w.is_sweep:
            measured = len(select_runs(w, args.repeats))
            per_rep = [sweep_estimate(r, w, measured) for r in mine]
            wall = statistics.median(sum(e["seconds"] for e in r.event("run_end")) for r in mine)
            rows.append(Row(name, statistics.median(per_rep), (min(per_rep), max(per_rep)),
                            wall, workload_flops(w), rss, acc, len(mine), others))
            continue
        steady_all, first_all, per_rep = [], [], []
        for r in mine:
            steady, first = steady_and_first(r.epochs())
            steady = steady or first  # one epoch only: nothing steady to report
            steady_all += steady
            first_all += first
            per_rep.append(statistics.median(steady))
        rows.append(Row(name, statistics.median(steady_all), (min(per_rep), max(per_rep)),
                        statistics.median(first_all), workload_flops(w), rss, acc, len(steady_all), others))
    return rows


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- entry point -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3 (default: all)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="e.g. torch-plain,keras-jax")
    p.add_argument("--reps", type=int, default=3, help="processes per contender and workload")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is excluded")
    p.add_argument("--for", dest="overrides", default="",
                   help="per-workload epochs/reps, e.g. W3:epochs=2,W3:reps=1,S2:reps=1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the contenders train")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast (not keras peers)")
    p.add_argument("--repeats", type=int, default=None,
                   help="sweeps: measure only the first N repeats of each configuration, extrapolate")
    p.add_argument("--data", type=Path, default=None, help="mnist.npz (default: the peers' default)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per peer process")
    p.add_argument("--quiet-wait", type=float, default=120,
                   help="before each process, wait up to this many seconds for other work to stop")
    p.add_argument("--contention", type=float, default=0.15,
                   help="cores used by other processes during a run above which it is run again")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a disturbed process at most")
    p.add_argument("--write", type=Path, default=None, help="Markdown file whose section to update")
    p.add_argument("--raw", type=Path, default=None, help="write every peer's JSON lines here")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.per = {}
    for item in filter(None, (i.strip() for i in args.overrides.split(","))):
        try:
            target, value = item.split("=")
            workload, name = target.split(":")
            assert name in ("epochs", "reps") and workload in WORKLOADS
            args.per[workload, name] = int(value)
        except (ValueError, AssertionError):
            p.error(f"--for: {item!r} is not WORKLOAD:epochs=N or WORKLOAD:reps=N with a workload of {list(WORKLOADS)}")
    return args


def choose(text: str, known: dict, what: str) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in known]
    if wrong:
        raise SystemExit(f"unknown {what}: {', '.join(wrong)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA GPU here")
    workloads = choose(args.only, WORKLOADS, "workload")
    contenders = choose(args.contenders, CONTENDERS, "contender")
    unavailable = {c.name: c.missing() for c in contenders if c.missing()}
    for name, why in unavailable.items():
        progress(f"{name}: skipped ({why})")
    load = os.getloadavg()[0]  # others' work on the machine skews every timing: say how much
    wait_for_quiet(args.quiet_wait)
    peaks = sgemm_peak(args.threads, device=args.device, precision=args.precision)
    progress(f"sgemm peak: {', '.join(f'{k} {v:.0f}' for k, v in peaks.items())} GFLOP/s on {args.threads} "
             f"threads; load average {load:.2f}")
    results, everything = [], []
    for w in workloads:
        runs = measure(w, contenders, args, unavailable)
        everything += runs
        results.append((w, summarise(w, runs, args)))
    wait_for_quiet(args.quiet_wait)
    peaks = {k: max(v, peaks[k]) for k, v in sgemm_peak(args.threads, device=args.device,
                                                         precision=args.precision).items()}
    peak = max(peaks.values())
    sections = [table(w, rows, peak, unavailable, args) for w, rows in results]
    starts = [r.event("start")[0] for r in everything]
    versions = {s["peer"]: s["versions"] for s in starts}
    sweeps = any(w.is_sweep for w in workloads)
    text = header(peaks, args, versions, {s["data"] for s in starts}, load, sweeps)
    text += "\n\n" + "\n\n".join(sections)
    print(text)
    if args.write:
        write_section(args.write, text)
    if args.raw:
        args.raw.write_text("".join(json.dumps(line) + "\n" for r in everything for line in r.lines))


if __name__ == "__main__":
    main()
