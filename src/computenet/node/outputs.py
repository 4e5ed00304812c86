"""Files stored for task outputs: written from gateway reports, shown in task views."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.model.protocol import OutputFileLog
from computenet.node.views import AttemptOut, OutputFileOut, TaskOut
from computenet.store.tables_data import OutputFile


def record_outputs(s: Session, task_id: str, attempt: int, files: Sequence[OutputFileLog]) -> None:
    """Store the output files a gateway reported with an attempt's final state."""
    for f in files:
        s.add(OutputFile(task_id=task_id, attempt=attempt, **f.model_dump()))


def load_outputs(s: Session, task_id: str) -> list[OutputFile]:
    """Every stored output file of a task, in attempt order."""
    q = (
        select(OutputFile)
        .where(OutputFile.task_id == task_id)
        .order_by(OutputFile.attempt, OutputFile.id)
    )
    return list(s.scalars(q))


def attach_outputs(out: TaskOut, files: Sequence[OutputFile]) -> None:
    """Put each attempt's output files on the task view (adding attempts that ran none)."""
    if not files:
        return
    attempts = {a.attempt: a for a in out.attempts or []}
    for f in files:
        entry = attempts.setdefault(f.attempt, AttemptOut(attempt=f.attempt, executors=[]))
        entry.outputs.append(
            OutputFileOut(url=f.url, path=f.path, size_bytes=f.size_bytes, sha256=f.sha256)
        )
    out.attempts = [attempts[a] for a in sorted(attempts)]
