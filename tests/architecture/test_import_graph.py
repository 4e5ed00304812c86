"""Package boundaries (docs/architecture.md): who may import whom among the top-level
packages of computenet, computed from the source, and what a client library loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import computenet

SRC = Path(computenet.__file__).parent

# Each package and the packages it may import, lowest first. The node composes the
# federation (never the reverse); gateways and the SDK are separate programs that share
# only the wire models; the CLI sits on top of everything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "store": {"errors", "model"},
    "sched": {"errors", "model"},
    "tasks": {"errors", "model", "store", "sched"},
    # The simulator makes the node's pass, dispatch and pool-health decisions
    # (tasks/placement.py, tasks/dispatching.py, tasks/health.py, pure like
    # tasks/lifecycle.py); it never writes through
    # tasks/transitions.py (the store).
    "sim": {"errors", "model", "sched", "tasks"},
    "billing": {"errors", "model", "store", "tasks"},
    "federation": {"errors", "model", "store", "sched", "tasks", "billing"},
    "node": {"errors", "model", "store", "sched", "tasks", "billing", "federation"},
    "gateway": {"errors", "model"},
    "sdk": {"errors", "model"},
    "cli": {
        "errors", "model", "store", "sched", "sim", "tasks", "billing", "federation", "node",
        "gateway", "sdk",
    },
}  # fmt: skip


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def import_graph() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the files that import it (runtime and type-only)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in SRC.rglob("*.py"):
        pkg = package_of(path)
        if pkg == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "computenet" and len(parts) > 1 and parts[1] != pkg:
                    graph[pkg][parts[1]].add(str(path.relative_to(SRC)))
    return graph


def test_every_package_is_placed_in_the_layers() -> None:
    found = {package_of(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert found == set(ALLOWED)


def test_the_allowed_imports_have_no_cycle() -> None:
    try:
        list(TopologicalSorter(ALLOWED).static_order())
    except CycleError as exc:  # pragma: no cover - the table above is the thing tested
        raise AssertionError(f"the layer table has a cycle: {exc.args[1]}") from None


def test_no_package_imports_upward_or_in_a_cycle() -> None:
    upward = {
        f"{pkg} -> {dep}": sorted(files)
        for pkg, deps in import_graph().items()
        for dep, files in deps.items()
        if dep not in ALLOWED[pkg]
    }
    assert upward == {}


def test_the_graph_sees_real_imports() -> None:
    graph = import_graph()
    assert "store" in graph["tasks"] and "federation" in graph["node"]


def test_the_sdk_loads_neither_sqlalchemy_nor_the_store() -> None:
    code = (
        "import sys, computenet.sdk\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')"
        " or m.startswith(('computenet.store', 'computenet.node', 'computenet.tasks')))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
