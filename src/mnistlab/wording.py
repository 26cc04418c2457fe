"""How quantities read wherever mnistlab prints them (the plan line, the CLI, the report header)."""

from __future__ import annotations


def duration(seconds: float, decimals: int = 0) -> str:
    """``45 s`` (``45.3 s`` with ``decimals=1``), ``3 min 20 s``, ``5 h 07 min``, ``1,203 h 00 min``."""
    if seconds < 60:
        return f"{seconds:.{decimals}f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"
