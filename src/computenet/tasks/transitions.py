"""The one writer of task state: guarded updates that also write the task's event row.

Every change of a task's phase goes through :func:`move` (a loaded, locked row) or
:func:`move_by_id` (a row not loaded, e.g. a batch of placements). Both check the event
against :mod:`computenet.tasks.lifecycle`, then ``UPDATE tasks ... WHERE id = ? AND <the
columns of the expected phase>``, so a writer whose view went stale changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Table, and_, exists, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from computenet.errors import Conflict
from computenet.model.task import TaskState
from computenet.store import tables as t
from computenet.store.tables_federation import FedForward
from computenet.tasks.lifecycle import (
    FORWARD_STEPS,
    INBOUND_STEPS,
    Event,
    IllegalTransition,
    Phase,
    apply,
    phase_of,
    step_record,
    tes_state,
)

log = logging.getLogger("computenet.lifecycle")

LIVE_FORWARD = ("sent", "confirmed")  # fed_forwards states in which another node has it
MOVES = "computenet.moves"  # the key of a session's ``info`` under which moves are listed


@dataclass(frozen=True, slots=True)
class Moved:
    """One task's change of phase in a transaction: whoever waits on it is woken once the
    transaction commits (see :func:`moves`)."""

    task_id: str
    before: Phase | None  # None: the task was created
    after: Phase
    pool_cpi: str | None = None  # the pool a placement chose


def moves(info: dict[str, Any]) -> list[Moved]:
    """The moves listed in a session's ``info`` (empty when none)."""
    listed: list[Moved] = info.get(MOVES, [])
    return listed


def _note(s: Session, moved: Moved) -> None:
    s.info.setdefault(MOVES, []).append(moved)


class StaleTransition(Conflict):
    """The task was no longer in the phase the writer read (changed meanwhile)."""


def _live_forward(task_id: Any) -> ColumnElement[bool]:
    return exists().where(FedForward.task_id == task_id, FedForward.state.in_(LIVE_FORWARD))


def guard(phase: Phase) -> ColumnElement[bool]:
    """SQL that holds exactly for tasks in ``phase``."""
    state = t.Task.state == tes_state(phase).value
    if phase is Phase.WAITING:
        return and_(state, t.Task.pool_cpi.is_(None))
    if phase is Phase.PLACED:
        return and_(
            state,
            t.Task.pool_cpi.is_not(None),
            t.Task.lease_id.is_(None),
            ~_live_forward(t.Task.id),
        )
    if phase is Phase.FORWARDED:
        return and_(state, t.Task.pool_cpi.is_not(None), _live_forward(t.Task.id))
    return state


def current_phase(s: Session, row: t.Task) -> Phase:
    """The phase of a loaded task row (one look at ``fed_forwards`` for a placed task)."""
    forwarded = False
    if row.state == TaskState.QUEUED.value and row.pool_cpi is not None:
        forwarded = bool(s.scalar(select(_live_forward(row.id))))
    return phase_of(row.state, row.pool_cpi, forwarded)


def _check(tid: str, phase: Phase, event: Event) -> Phase:
    try:
        return apply(phase, event)
    except IllegalTransition:
        log.warning("refused event %r on task %s in phase %s", event.value, tid, phase.value)
        raise


def move(
    s: Session, row: t.Task, event: Event, now: datetime, message: str | None, **values: Any
) -> Phase:
    """Apply ``event`` to the locked task ``row``, writing ``values`` with its new state and
    an event row saying ``message`` (None: the caller copies the timeline from the node that
    runs the task); return the new phase. A transition to the same phase writes nothing.
    Raises :class:`IllegalTransition` or :class:`StaleTransition`."""
    phase = current_phase(s, row)
    new = _check(row.id, phase, event)
    if new is phase:
        return phase
    attempt = _write(s, row.id, phase, new, now, message, values)
    if attempt is None:
        raise StaleTransition(f"task {row.id} left phase {phase.value} meanwhile")
    # Keep the loaded row in step without reading it again.
    for key, value in {"state": tes_state(new).value, "updated_at": now, **values}.items():
        set_committed_value(row, key, value)
    return new


def move_by_id(
    s: Session,
    tid: str,
    expected: Phase,
    event: Event,
    now: datetime,
    message: str,
    **values: Any,
) -> bool:
    """Apply ``event`` to task ``tid`` if it is still in phase ``expected``; False if not."""
    new = _check(tid, expected, event)
    if new is expected:
        return False
    return _write(s, tid, expected, new, now, message, values) is not None


def _write(
    s: Session,
    tid: str,
    phase: Phase,
    new: Phase,
    now: datetime,
    message: str | None,
    values: dict[str, Any],
) -> int | None:
    state = tes_state(new).value
    table = t.Task.__table__
    assert isinstance(table, Table)
    attempt = s.execute(
        update(table)
        .where(table.c.id == tid, guard(phase))
        .values(state=state, updated_at=now, **values)
        .returning(table.c.attempt)
    ).scalar()
    if attempt is None:
        return None
    if message is not None:
        log_line(s, tid, int(attempt), state, message, now)
    _note(s, Moved(tid, phase, new, values.get("pool_cpi")))
    return int(attempt)


def log_line(s: Session, tid: str, attempt: int, state: str, message: str, at: datetime) -> None:
    """Add a line to a task's timeline without changing its state (a gateway's system log,
    a mirrored remote event)."""
    s.execute(
        insert(t.TaskEvent).values(
            task_id=tid, at=at, attempt=attempt, state=state, message=message
        )
    )


def create(s: Session, row: dict[str, Any], now: datetime) -> None:
    """Insert a new task, waiting for the scheduler, and its 'submitted' event."""
    s.execute(insert(t.Task), {**row, "state": tes_state(Phase.WAITING).value, "pool_cpi": None})
    log_line(s, str(row["id"]), 0, TaskState.QUEUED.value, "submitted", now)
    _note(s, Moved(str(row["id"]), None, Phase.WAITING))


class _Record(Protocol):
    state: str


def step_forward(rec: _Record | None, new: str) -> str:
    """Move an origin's forward record (``fed_forwards``) to ``new``; return it."""
    state = step_record(FORWARD_STEPS, None if rec is None else rec.state, new)
    if rec is not None:
        rec.state = state
    return state


def step_inbound(rec: _Record | None, new: str) -> str:
    """Move an owner's inbound record (``fed_inbound``) to ``new``; return it."""
    state = step_record(INBOUND_STEPS, None if rec is None else rec.state, new)
    if rec is not None:
        rec.state = state
    return state
