"""Read models of the native API: what ``/api/v1`` returns for tasks and pools."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer

from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState
from computenet.store import tables as t

# Amounts print as plain decimals ("0.000000785"), never in exponent form.
Amount = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str)]


class View(StrEnum):
    """How much of a task to return, as in TES."""

    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


class ExecutorLogOut(BaseModel):
    """One executor's outcome in one attempt."""

    index: int
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class OutputFileOut(BaseModel):
    """A file stored for one of the task's outputs, with its SHA-256."""

    url: str
    path: str
    size_bytes: int
    sha256: str


class AttemptOut(BaseModel):
    """One attempt at running the task."""

    attempt: int
    executors: list[ExecutorLogOut]
    outputs: list[OutputFileOut] = []


class EventOut(BaseModel):
    """One entry in the task's timeline."""

    at: datetime
    attempt: int
    state: TaskState
    message: str


class UsageOut(BaseModel):
    """Measured usage of one attempt."""

    attempt: int
    pool: str
    accelerator_model: str | None = None
    cards: int
    wall_s: Amount
    card_hours: Amount
    cpu_core_hours: Amount
    memory_gib_hours: Amount
    pflops_hours_fp16: Amount | None = None


class TaskOut(BaseModel):
    """A task as the native API shows it."""

    id: str
    state: TaskState
    name: str | None = None
    attempt: int | None = None
    pool: str | None = None
    reservation: str | None = None  # the advance reservation it was placed on
    reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    spec: TaskSpec | None = None
    attempts: list[AttemptOut] | None = None
    events: list[EventOut] | None = None
    usage: list[UsageOut] | None = None


class TaskListOut(BaseModel):
    """A page of tasks."""

    tasks: list[TaskOut]
    next_page_token: str | None = None


class PoolOut(BaseModel):
    """A pool record: description plus live state."""

    cpi: str
    provider: str
    health: str
    running_tasks: int
    last_heartbeat_at: datetime | None = None
    spec: PoolSpec


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
