"""The body of each kind of federation message, as a model.

A node checks every message it receives against the model of its kind before any handler
reads it, so a malformed body is refused with 400 naming the field, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from computenet.errors import InvalidInput
from computenet.model.task import TaskSpec

TaskId = Annotated[str, Field(min_length=1, max_length=128)]


class Body(BaseModel):
    """Fields a newer node adds are ignored, so nodes of nearby versions still talk."""

    model_config = ConfigDict(extra="ignore")


class SyncPush(Body):
    """A child's index delta (or the whole index when ``full``) and its round-trip time."""

    seq: int = Field(default=0, ge=0)
    full: bool = False
    records: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)
    rtt_ms: float | None = None
    region: str | None = Field(default=None, max_length=16)


class IndexPull(Body):
    """A child asks for the index after its last change counter."""

    after: int = Field(default=0, ge=0)


class Resolve(Body):
    """Which node serves a pool."""

    cpi: str = Field(max_length=256)


class ForwardedTask(Body):
    """A task handed to the node that owns its pool, under its global id."""

    task_id: TaskId
    spec: TaskSpec


class TaskForward(Body):
    """Tasks placed on the receiver's pools; held until the sender confirms them."""

    tasks: list[ForwardedTask] = Field(max_length=100_000)


class TaskIds(Body):
    """Tasks a message is about (confirm, status, cancel)."""

    task_ids: list[TaskId] = Field(max_length=100_000)


class TaskUpdate(Body):
    """Snapshots of tasks the receiver forwarded to the sender, which changed there (the
    same form as a ``task.status`` reply), pushed so the origin need not wait for its pull."""

    tasks: list[dict[str, Any]] = Field(max_length=1000)


class SettlementAsk(Body):
    """Ask for the receiver's statement with the sender for a period."""

    period: str = Field(default="", max_length=32)


MESSAGES: dict[str, type[Body]] = {
    "sync.push": SyncPush,
    "index.pull": IndexPull,
    "resolve": Resolve,
    "task.forward": TaskForward,
    "task.confirm": TaskIds,
    "task.status": TaskIds,
    "task.cancel": TaskIds,
    "task.update": TaskUpdate,
    "settlement.statement": SettlementAsk,
}


def check_body(kind: str, body: dict[str, Any]) -> Body:
    """The body of a ``kind`` message as its model; InvalidInput naming each bad field."""
    model = MESSAGES.get(kind)
    if model is None:
        raise InvalidInput(f"unknown federation message {kind!r}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidInput(f"malformed {kind} message: {fields}") from None
