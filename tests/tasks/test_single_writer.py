"""Only the lifecycle's writer (computenet/tasks/transitions.py) writes task state.

An AST scan of every module: no assignment to a ``.state`` attribute, no ``state=`` in an
``update(...).values(...)``, no new task rows and no event rows written anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import computenet

SRC = Path(computenet.__file__).parent
WRITER = Path("tasks/transitions.py")
# Records with their own states that are not tasks: reservations (billing) keep a small
# booked/charged/cancelled machine of their own, and a service (node/services/controller.py)
# is active or deleting; its replica tasks change state only through the task service.
OTHER_RECORDS = {Path("billing/reservations.py"), Path("node/services/controller.py")}


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        out: list[ast.expr] = []
        for target in node.targets:
            out.extend(target.elts if isinstance(target, ast.Tuple) else [target])
        return out
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    return []


def _is_name(node: ast.expr, name: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == name) or (
        isinstance(node, ast.Name) and node.id == name
    )


def offences(tree: ast.AST) -> list[str]:
    """What in ``tree`` writes task state outside the lifecycle."""
    found = []
    for node in ast.walk(tree):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and target.attr == "state":
                found.append(f"line {node.lineno}: assigns .state")
        if isinstance(node, ast.Call):
            func = node.func
            sets_state = any(k.arg == "state" for k in node.keywords)
            if isinstance(func, ast.Attribute) and func.attr == "values" and sets_state:
                found.append(f"line {node.lineno}: .values(state=...)")
            if _is_name(func, "TaskEvent") or (
                _is_name(func, "insert")
                and any(_is_name(a, "TaskEvent") or _is_name(a, "Task") for a in node.args)
            ):
                found.append(f"line {node.lineno}: writes a task or event row")
    return found


def test_no_module_outside_the_lifecycle_writes_task_state() -> None:
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel == WRITER or rel in OTHER_RECORDS or rel.parts[0] == "store":
            continue
        if found := offences(ast.parse(path.read_text(), str(path))):
            bad[str(rel)] = found
    assert bad == {}


def test_the_scan_sees_each_kind_of_write() -> None:
    code = """
row.state = "RUNNING"
fwd.state, fwd.updated_at = "sent", now
s.execute(update(t.Task).values(state="QUEUED"))
s.add(t.TaskEvent(task_id=tid))
s.execute(insert(t.Task), row)
"""
    assert len(offences(ast.parse(code))) == 5
