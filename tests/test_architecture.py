"""The package tree is the architecture: imports flow one way, nothing cycles, no module is long.

Every ``import`` statement of ``src/mnistlab`` is read with ``ast`` (function-level ones too) and
checked against the intended direction (``ALLOWED``): cli -> api -> runner -> {spec, engine, store,
data}; engine -> {spec, data}; report -> store. A new dependency against the direction fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mnistlab"
MAX_LINES = 400

# component -> the components it may import (leaves: errors, registry, numerics, version)
LEAVES = {"errors", "registry", "numerics", "version", "wording", "processes"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "version": set(), "numerics": set(), "registry": {"errors"}, "wording": set(),
    "processes": {"errors"},  # training processes' priority (`run --background`) and lifetime
    "spec": {"errors", "registry"},
    "data": {"errors", "registry"},
    "store": {"errors", "numerics"},
    "images": {"errors"},
    "engine": {"errors", "registry", "numerics", "spec", "data"},
    "runner": {"errors", "version", "numerics", "wording", "processes", "engine", "spec", "store", "data"},
    "report": {"errors", "numerics", "wording", "store", "images"},
    "frames": {"errors", "store", "report"},  # results as pandas DataFrames
    "notebook": {"errors", "spec", "store", "report", "frames"},  # Results, progress bars, inline reports
    "api": {"errors", "version", "numerics", "registry", "runner", "engine", "spec", "store", "data", "report",
            "images", "notebook"},
    "console": {"errors", "wording", "report"},  # progress and tables as the CLI prints them (the comparison table's cells)
    "cli": {"errors", "wording", "api", "report", "store", "spec", "console", "processes"},  # read commands skip
    # the api: no torch for `ls`; nor for the waiting parent of `run --background`
    "__init__": {"version", "api", "store", "notebook"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The mnistlab modules ``path`` imports, relative imports resolved, at any depth of the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mnistlab"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "mnistlab":
                continue
            for alias in node.names:  # `from . import spec` imports the module mnistlab.spec
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_imports_follow_the_intended_direction():
    wrong = []
    for module, deps in graph().items():
        here = component(module)
        for dep in deps:
            there = component(dep)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{module} imports {dep} ({here} -> {there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            dep = dep if dep in edges else dep.rpartition(".")[0]
            if dep == node or dep not in edges:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path):
    assert "mnistlab.runner.driver" in graph()["mnistlab.runner.executors"]   # `from .driver import ...`
    assert "mnistlab.api" in graph()["mnistlab"]                               # inside __getattr__
    assert component("mnistlab.engine.fit") == "engine" and component("mnistlab") == "__init__"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_importing_the_package_store_and_report_loads_no_torch():
    code = ("import sys, mnistlab, mnistlab.store, mnistlab.report.table, mnistlab.report.html, mnistlab.spec; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
