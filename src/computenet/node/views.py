"""Render store rows as the native API's read models (defined in :mod:`computenet.model.api`)."""

from __future__ import annotations

from typing import Any

from computenet.model.api import (
    Amount,
    AttemptOut,
    EventOut,
    ExecutorLogOut,
    OutputFileOut,
    PoolOut,
    TaskListOut,
    TaskOut,
    UsageOut,
    View,
)
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState
from computenet.store import tables as t

__all__ = [
    "Amount",
    "AttemptOut",
    "EventOut",
    "ExecutorLogOut",
    "OutputFileOut",
    "PoolOut",
    "TaskListOut",
    "TaskOut",
    "UsageOut",
    "View",
    "pool_out",
    "spec_json",
    "task_out",
    "usage_out",
]


def pool_out(row: t.Pool) -> PoolOut:
    """Render a pool row."""
    return PoolOut(
        cpi=row.cpi,
        provider=row.provider_prefix,
        health=row.health,
        running_tasks=row.running_tasks,
        last_heartbeat_at=row.last_heartbeat_at,
        spec=PoolSpec.model_validate(row.spec),
    )


def task_out(
    row: t.Task,
    view: View,
    logs: list[t.ExecutorLog] | None = None,
    events: list[t.TaskEvent] | None = None,
    usage: list[t.UsageRecord] | None = None,
) -> TaskOut:
    """Render a task row at the given view (logs' text only in FULL)."""
    state = TaskState(row.state)
    if view is View.MINIMAL:
        return TaskOut(id=row.id, state=state)
    out = TaskOut(
        id=row.id,
        state=state,
        name=row.name,
        attempt=row.attempt,
        pool=row.pool_cpi,
        reservation=row.reservation_id if row.pool_cpi else None,
        reason=row.reason or None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        spec=TaskSpec.model_validate(row.spec),
    )
    full = view is View.FULL
    attempts: dict[int, list[ExecutorLogOut]] = {}
    for log in logs or []:
        attempts.setdefault(log.attempt, []).append(
            ExecutorLogOut(
                index=log.index,
                start_time=log.start_time,
                end_time=log.end_time,
                exit_code=log.exit_code,
                stdout=log.stdout if full else None,
                stderr=log.stderr if full else None,
            )
        )
    out.attempts = [AttemptOut(attempt=a, executors=e) for a, e in sorted(attempts.items())]
    if events is not None:
        out.events = [
            EventOut(at=e.at, attempt=e.attempt, state=TaskState(e.state), message=e.message)
            for e in events
        ]
    out.usage = [usage_out(u) for u in usage or []]
    return out


def usage_out(u: t.UsageRecord) -> UsageOut:
    """Render a usage record."""
    return UsageOut(
        attempt=u.attempt,
        pool=u.pool_cpi,
        accelerator_model=u.accelerator_model,
        cards=u.cards,
        wall_s=u.wall_s,
        card_hours=u.card_hours,
        cpu_core_hours=u.cpu_core_hours,
        memory_gib_hours=u.memory_gib_hours,
        pflops_hours_fp16=u.pflops_hours_fp16,
    )


def spec_json(spec: TaskSpec) -> dict[str, Any]:
    """The stored JSON form of a spec (Decimals as strings, defaults dropped)."""
    return spec.model_dump(mode="json", exclude_defaults=True)
