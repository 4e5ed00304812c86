"""The native API's service read and write models (``/api/v1/services``), shared by the
node, the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from computenet.model.api import AttemptOut
from computenet.model.task import TaskState


class DeployOut(BaseModel):
    """A deploy's outcome; ``key`` is the service's first API key, shown only this once."""

    name: str
    version: str
    created: bool
    rolling: bool
    key: str | None = None


class ScaleIn(BaseModel):
    """New replica bounds; an omitted one stays as it is."""

    model_config = ConfigDict(extra="forbid")
    min: int | None = Field(default=None, ge=0, le=256)
    max: int | None = Field(default=None, ge=1, le=256)


class ReplicaOut(BaseModel):
    """One live replica: its task and where it runs."""

    task_id: str
    version: str
    replica: int
    state: TaskState
    node: str
    gateway: str | None = None
    region: str | None = None
    region_name: str | None = None
    lat: float | None = None  # where the region is, for the console's map
    lon: float | None = None
    pool: str | None = None
    price_per_card_hour: Decimal | None = None
    healthy: bool | None = None  # None: no metric plane on this node to say
    in_flight: int | None = None  # requests the router has on it now (metric plane)


class LoadOut(BaseModel):
    """The service's load as the router measures it (absent without a metric plane)."""

    in_flight: int
    requests_per_s: float
    tokens_per_s: float | None = None


class ServiceOut(BaseModel):
    """A service and, on ``status``, its replicas."""

    name: str
    version: str
    state: str
    access: str
    owner: str
    tenant: str
    home_node: str
    min: int
    max: int
    desired: int
    live: int = 0
    note: str | None = None  # what last stopped the controller (budget, no pool...)
    replicas: list[ReplicaOut] | None = None
    load: LoadOut | None = None
    created_at: datetime
    updated_at: datetime


class KeyOut(BaseModel):
    """A service key: its id and, only when just created, the key itself."""

    id: str
    created_at: datetime
    key: str | None = None


class ReplicaLogsOut(BaseModel):
    """The logs of one replica task, attempt by attempt."""

    task_id: str
    replica: int
    version: str
    state: TaskState
    attempts: list[AttemptOut]
