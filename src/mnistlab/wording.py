"""How quantities read wherever mnistlab prints them (the plan line, the CLI, the report header)."""

from __future__ import annotations

from typing import Any


def duration(seconds: float, decimals: int = 0) -> str:
    """``45 s`` (``45.3 s`` with ``decimals=1``), ``3 min 20 s``, ``5 h 07 min``, ``1,203 h 00 min``."""
    if seconds < 60:
        return f"{seconds:.{decimals}f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def counted(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``10,001 runs``: a count with its noun, plural unless it is one."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def group_label(labels: list[str], resumes_after: int = 0) -> str:
    """A planned group's configurations (the first three, then how many more), and where it resumes."""
    text = ", ".join(labels[:3]) + (f" +{len(labels) - 3} more" if len(labels) > 3 else "")
    return text + (f" (resumes after epoch {resumes_after})" if resumes_after else "")


def software(env: dict[str, Any]) -> str:
    """``mnistlab 0.9 · torch 2.13.0+cpu · Python 3.12.3`` from a run's environment record."""
    return " · ".join(f"{name} {env[key]}" for key, name in (("mnistlab", "mnistlab"), ("torch", "torch"),
                                                             ("python", "Python")) if env.get(key))


def hardware(env: dict[str, Any]) -> str:
    """``cpu, 2 threads of 2 CPUs; Linux-…; low priority (nice 19)`` from a run's environment record."""
    if not env:
        return ""
    threads = f", {env['threads']} threads of {env['cpus']} CPUs" if env.get("threads") else ""
    name = f" ({env['device_name']})" if env.get("device_name") else ""
    where = f"; {env['platform']}" if env.get("platform") else ""
    priority = env.get("priority") or {}  # timings taken at low priority, beside other work
    low = f"; low priority (nice {priority['nice']})" if (priority.get("nice") or 0) > 0 else ""
    return f"{env.get('device', '?')}{name}{threads}{where}{low}"


def stretch_lines(trained_with: list[dict[str, Any]], epochs: int) -> list[str]:
    """``epochs 1-7: threads 2`` per stretch of a run trained in more than one way: what changed only."""
    keys = [k for k in dict.fromkeys(k for s in trained_with for k in s) if k != "from_epoch"
            and len({repr(s.get(k)) for s in trained_with}) > 1]
    lines = []
    if trained_with and trained_with[0]["from_epoch"] > 1:
        lines.append(f"{_epochs(1, trained_with[0]['from_epoch'] - 1)}: not recorded (a checkpoint of an older mnistlab)")
    for s, after in zip(trained_with, [*trained_with[1:], None]):
        span = _epochs(s["from_epoch"], after["from_epoch"] - 1 if after else epochs)
        lines.append(f"{span}: " + (", ".join(f"{k} {s.get(k)}" for k in keys) if keys else "as the engine line says"))
    return lines


def _epochs(first: int, last: int) -> str:
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


ENGINE_KEYS = ("device", "precision", "threads", "dense_gemm", "graph_free_mlp_step", "channels_last", "numerics",
               "cpu_capability")


def environment_lines(env: dict[str, Any], epochs: int) -> list[str]:
    """Where and how a run trained (``mnistlab show``): where a callback stopped it, versions, hardware,
    engine, executor, and the stretches of a run resumed in another way."""
    if not env:
        return []
    where = f" on {env['node']}" if env.get("node") else ""
    lines = [f"{label}: {text}" for label, text in (
        ("early stopping", env.get("early_stopping")),
        ("software", software(env)), ("hardware", hardware(env)),
        ("engine", ", ".join(f"{k} {env[k]}" for k in ENGINE_KEYS if k in env)),
        ("executor", f"{env['executor']}{where}" if env.get("executor") else "")) if text]
    if env.get("trained_with"):
        lines.append("trained in stretches (resumed with other settings; numbers may differ in the last bits):")
        lines += [f"  {line}" for line in stretch_lines(env["trained_with"], epochs)]
    return lines
