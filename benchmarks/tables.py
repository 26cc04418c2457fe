"""The harness's Markdown: one table per workload, the header that says how it was measured, and
the section of a document (docs/PERFORMANCE.md) that ``--write`` replaces."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

from benchmarks.workloads import Workload, epoch_flops

BEGIN, END = "<!-- benchmarks.run: begin -->", "<!-- benchmarks.run: end -->"


def workload_flops(w: Workload) -> float:
    """FLOPs behind the reported time: one epoch of a single run, or the whole sweep."""
    if w.is_sweep:
        return sum(epoch_flops(run) * run.epochs for run in w.runs)
    return epoch_flops(w.runs[0])


def table(w: Workload, rows: list, peak: float, unavailable: dict, args) -> str:
    """The workload's Markdown table: fastest first, then the FLOP limit, then who did not run."""
    if w.is_sweep:
        nominal = max(r.epochs for r in w.runs)
        head = (f"| contender | sweep s, extrapolated to {nominal} epochs/run (min–max) | × fastest | "
                f"measured s ({per(args, 'epochs', w)} epochs/run) | GFLOP/s | % of peak | peak RSS MiB | last val acc | reps | others' load |")
    else:
        head = ("| contender | steady s/epoch (min–max of reps) | × fastest | first epoch s | "
                "GFLOP/s | % of peak | peak RSS MiB | last val acc | steady epochs | others' load |")
    settings = [f"{n} {per(args, n, w)}" for n in ("epochs", "reps") if per(args, n, w) != getattr(args, n)]
    out = [f"**{w.name}** — {w.description}" + (f" ({', '.join(settings)})" if settings else ""), "", head, "|" + "---|" * (head.count("|") - 1)]
    fastest = min((r.seconds for r in rows), default=float("nan"))
    for r in sorted(rows, key=lambda r: r.seconds):
        gflops = r.flops / r.seconds / 1e9
        out.append(f"| {r.contender} | {r.seconds:.3g} ({r.spread[0]:.3g}–{r.spread[1]:.3g}) | "
                   f"{r.seconds / fastest:.2f} | {r.first:.3g} | {gflops:.1f} | {100 * gflops / peak:.0f}% | "
                   f"{r.rss_mib:.0f} | {r.val_accuracy:.4f} | {r.n} | {r.others:.2f} |")
    limit = workload_flops(w) / peak / 1e9
    out.append(f"| *limit at sgemm peak* | {limit:.3g} | {limit / fastest:.2f} | | {peak:.0f} | 100% | | | | |")
    for key, why in unavailable.items():
        name, where = key if isinstance(key, tuple) else (key, w.name)
        if where == w.name:
            out.append(f"| {name} | not available ({why}) | | | | | | | | |")
    return "\n".join(out)


def header(peaks: dict[str, float], args, versions: dict, data: set, load: float, sweeps: bool) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    peers = "; ".join(f"{name}: {', '.join(f'{k} {v}' for k, v in v.items())}" for name, v in versions.items())
    return "\n".join([
        f"Measured {datetime.date.today()} with `python -m benchmarks.run {' '.join(args.argv)}`",
        f"on {cpu}, {os.cpu_count()} cores, {args.threads} threads per contender, "
        + (f"device {args.device} ({gpu_name()}), " if args.device != "cpu" else "")
        + f"precision {args.precision}, "
        f"Python {platform.python_version()}; GEMM peak (best before/after) "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + f" GFLOP/s (the tables use {max(peaks.values()):.0f}); load average at start {load:.2f}.",
        f"Versions: {peers or 'none ran'}. Data: {', '.join(sorted(data)) or 'n/a'}.",
        f"Medians of {args.reps} repetition(s) x {args.epochs} epochs, each contender a fresh process; "
        "the first epoch of each run (compilation, warm-up) is excluded from s/epoch. "
        "Others' load: cores other processes kept busy during a timed epoch (worst one); "
        f"a process disturbed above {args.contention} was run again (up to {args.retries} times).",
    ] + ([
        "Sweeps are measured with the epochs above per run and extrapolated: "
        "run = setup + first epoch + (epochs - 1) x median steady epoch"
        + (f"; only {args.repeats} repeat(s) per configuration measured, scaled to all." if args.repeats else ".")
    ] if sweeps else []))


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def write_section(path: Path, text: str) -> None:
    """Replace the harness's section of `path` (between its markers), or append one."""
    section = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text() if path.exists() else "# Performance\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## Side-by-side benchmark\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def per(args: argparse.Namespace, name: str, w: Workload) -> int:
    """``args.epochs`` or ``args.reps``, or the workload's own from ``--for``."""
    return args.per.get((w.name, name), getattr(args, name))
