"""How the CLI tells a person about one task: why it failed, why it waits, what it printed."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from computenet.model.task import TaskSpec
from computenet.node.views import TaskOut
from computenet.sdk.local_inputs import read_local_text

STDERR_TAIL_LINES = 10
FAILED = ("EXECUTOR_ERROR", "SYSTEM_ERROR")


def failure_lines(task: TaskOut) -> list[str]:
    """For a failed task (FULL view): which executor failed, its exit code and the last lines
    of its stderr, or the system's reason; empty for any other state."""
    if task.state.value not in FAILED:
        return []
    out: list[str] = []
    attempts = task.attempts or []
    failed = [
        e for e in (attempts[-1].executors if attempts else []) if e.exit_code not in (None, 0)
    ]
    commands = task.spec.executors if task.spec is not None else []
    for e in failed[:1]:
        program = commands[e.index].command[0] if e.index < len(commands) else "executor"
        out.append(f"  executor {e.index} ({program}) exited with code {e.exit_code}")
        tail = (e.stderr or "").rstrip("\n").splitlines()[-STDERR_TAIL_LINES:]
        if tail:
            out.append(f"  stderr (last {len(tail)} line{'' if len(tail) == 1 else 's'}):")
            out.extend(f"    {line}" for line in tail)
    why = task.reason or next((ev.message for ev in reversed(task.events or []) if ev.message), "")
    if why and not failed:
        out.append(f"  why: {why}")
    return out


def local_inputs(pairs: list[str]) -> list[dict[str, Any]]:
    """``--input LOCAL[=TASK_PATH]``: a local file sent inline with the task, placed at
    TASK_PATH (by default its name, in the task's working directory)."""
    inputs = []
    for pair in pairs:
        local, _, inside = pair.partition("=")
        path = Path(local)
        text = read_local_text(path, f"--input {local}")
        inputs.append({"path": inside or path.name, "content": text})
    return inputs


def local_file_hint(command: list[str], inputs: list[dict[str, Any]]) -> str | None:
    """A hint when the command names a file in this directory that the task will not have:
    tasks run in their own directory, usually on another machine."""
    given = {i["path"] for i in inputs}
    for arg in command[1:]:
        if arg in given or arg.startswith("-"):
            continue
        if not Path(arg).is_absolute() and Path(arg).is_file():
            return (
                f"note: {arg} is a file here, but the task runs in its own directory: "
                f"send it with --input {arg}"
            )
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (``X``, ``X | None``, ``list[X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def unknown_field(loc: Sequence[int | str]) -> str:
    """'executors.0.colour: unknown field (did you mean ...?)' for a misspelled task key:
    the key is named, and the closest real key of the same place suggested."""
    model: type[BaseModel] | None = TaskSpec
    for part in loc[:-1]:
        if model is None:
            break
        if isinstance(part, str):
            field = model.model_fields.get(part)
            model = _model_in(field.annotation) if field is not None else None
    where = ".".join(str(p) for p in loc)
    key = str(loc[-1]) if loc else ""
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"{where}: unknown field {key!r} (did you mean {close[0]!r}?)"
    hint = f"; known here: {', '.join(known)}" if known else ""
    return f"{where}: unknown field {key!r}{hint}"
