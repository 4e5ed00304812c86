"""Read models of the native API: what ``/api/v1`` returns for tasks and pools.

Shared by the node, which fills them from its store (:mod:`computenet.node.views`), and the
SDK, which parses them; so this module imports no store.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, PlainSerializer

from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState

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
