"""Inference services: the service file a user deploys, and the binding that marks a task
as one of its replicas (a replica IS a task: placed, billed and isolated like one).

The metric schemas of the routing plane (``ReplicaMetrics``, ``SiteMetrics``) sit at the end.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from computenet.model.pool import Strict
from computenet.model.service_binding import (
    DEFAULT_PORT,
    KEY_HASH,
    SERVICE_NAME,
    Access,
    ServiceBinding,
    ServiceName,
    ServiceVersion,
)
from computenet.model.task import (
    MAX_TIME_LIMIT_S,
    Executor,
    Input,
    Placement,
    Resources,
    TaskSpec,
)

__all__ = [
    "DEFAULT_PORT",
    "KEY_HASH",
    "MAX_REPLICAS",
    "SERVICE_NAME",
    "Access",
    "HealthCheck",
    "ReplicaPolicy",
    "ServiceBinding",
    "ServiceSpec",
    "key_hash",
]

MAX_REPLICAS = 256


class ReplicaPolicy(Strict):
    """How many replicas run, and when the autoscaler adds or removes one."""

    min: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    target_inflight: float = Field(
        default=4.0, gt=0, le=100_000, description="in-flight requests per replica"
    )
    target_tokens_per_s: float | None = Field(
        default=None, gt=0, le=10**9, description="per replica, where the server reports it"
    )
    scale_to_zero: bool = False
    scale_up_window_s: int = Field(
        default=30, ge=1, le=3600, description="load above target this long adds replicas"
    )
    scale_down_delay_s: int = Field(
        default=300, ge=1, le=86400, description="load below target this long removes one"
    )

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaPolicy:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) must not exceed replicas.max ({self.max})")
        if self.min == 0 and not self.scale_to_zero:
            raise ValueError("replicas.min 0 needs scale_to_zero: true")
        return self


class HealthCheck(Strict):
    """The HTTP check a gateway runs against each replica through its socket."""

    path: str = Field(default="/health", pattern=r"^/[^\x00-\x20]{0,255}$")
    interval_s: float = Field(default=1.0, gt=0, le=3600)
    timeout_s: float = Field(default=1.0, gt=0, le=600)
    failures: int = Field(default=3, ge=1, le=100, description="in a row mark it unhealthy")


class ServiceSpec(Strict):
    """A service file (``service.yaml``): an HTTP server run as long-lived replicas.

    The server listens on the port given in ``$PORT``; its requirements are a task's
    (``resources``, ``placement``), so replicas are placed by the same scheduler.
    """

    name: ServiceName = Field(description="DNS label, 1-40 characters of [a-z0-9-]")
    version: ServiceVersion = "1"
    description: str | None = Field(default=None, max_length=4096)
    executor: Executor
    inputs: list[Input] = Field(default_factory=list, max_length=1024)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    replicas: ReplicaPolicy = Field(default_factory=ReplicaPolicy)
    health: HealthCheck = Field(default_factory=HealthCheck)
    access: Access = Access.KEY
    secrets: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")],
    ] = Field(default_factory=dict, max_length=64)

    @field_validator("executor")
    @classmethod
    def _port_is_ours(cls, v: Executor) -> Executor:
        if "PORT" in v.env:
            raise ValueError("executor.env must not set PORT: each replica is given its own")
        return v

    def replica_task(
        self, replica: int, key_hashes: list[str], home_node: str, default_time_limit_s: int
    ) -> TaskSpec:
        """The task that runs replica ``replica`` of this version.

        ``PORT`` is set for the server; a replica runs until cancelled or until the
        service's own ``time_limit_s``, else ``default_time_limit_s`` (the node's replica
        segment: the controller starts a successor before it ends).
        """
        binding = ServiceBinding(
            name=self.name,
            version=self.version,
            replica=replica,
            port=DEFAULT_PORT,
            health_path=self.health.path,
            health_interval_s=self.health.interval_s,
            health_timeout_s=self.health.timeout_s,
            health_failures=self.health.failures,
            key_hashes=key_hashes,
            access=self.access,
            home_node=home_node,
        )
        env = {**self.executor.env, "PORT": str(DEFAULT_PORT)}
        limit = self.resources.time_limit_s or min(default_time_limit_s, MAX_TIME_LIMIT_S)
        return TaskSpec(
            name=f"service/{self.name}/{self.version}/{replica}",
            description=self.description,
            executors=[self.executor.model_copy(update={"env": env})],
            inputs=self.inputs,
            tags={"computenet.service": self.name, "computenet.service.version": self.version},
            resources=self.resources.model_copy(update={"time_limit_s": limit}),
            placement=self.placement,
            secrets=self.secrets,
            service=binding,
        )


def key_hash(key: str) -> str:
    """The sha256 hex a binding stores for a service key (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


# --- Metric plane schemas (CATS terms; owned by the routing plane) ----------------------------


class MetricCategory(StrEnum):
    """The CATS metric categories the router scores sites on."""

    COMPUTE = "compute"
    NETWORK = "network"
    COST = "cost"


class CatsMetric(Strict):
    """A raw (CATS level 0) metric: a measured value with where it comes from, the statistic
    taken and over what window."""

    name: str = Field(max_length=64, description="in_flight, requests_per_s, tokens_per_s, ...")
    category: MetricCategory
    value: float | None
    unit: str = Field(max_length=32)
    source: str = Field(max_length=160, description="gateway:<id>, node:<code> or spec")
    statistic: str = Field(max_length=16, description="current, mean, rate or sum")
    window_s: float = Field(ge=0)


class CategoryScore(Strict):
    """A normalized score of one category (CATS level 1), 0 (worst) to 10 (best)."""

    category: MetricCategory
    score: float = Field(ge=0, le=10)
    source: str = Field(max_length=160)
    statistic: str = Field(max_length=16)
    window_s: float = Field(ge=0)


class ReplicaMetrics(Strict):
    """What the metric plane knows of one replica: raw metrics as its gateway reports them."""

    task_id: str
    service: str
    version: str
    replica: int
    node_code: str
    gateway_id: str | None
    region: str | None
    healthy: bool
    in_flight: int
    metrics: list[CatsMetric]


class SiteMetrics(Strict):
    """One site (a node with replicas of the service under it): raw metrics, a score per
    category (level 1) and an overall 0-10 score (level 2), each with source and window."""

    site: str = Field(description="the node code")
    region: str | None
    replicas: int
    healthy_replicas: int
    metrics: list[CatsMetric]
    scores: list[CategoryScore]
    overall: float = Field(ge=0, le=10)
    overall_statistic: str = "weighted mean of the category scores"
    health_age_s: float | None = Field(
        None,
        description="for another node's site: age of its last health report through federation "
        "sync (None: no fresh report, so healthy while it answers forwards)",
    )


class LatencyPoint(Strict):
    """Router-observed total latency of the requests that ended in one time slot."""

    at: float = Field(description="the slot's start, Unix seconds")
    requests: int = Field(ge=0)
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)


class LatencySeries(Strict):
    """Latency over time of one site or one of this node's replicas."""

    kind: Literal["site", "replica"]
    key: str = Field(description="the site's node code, or the replica's task id")
    label: str
    region: str | None
    points: list[LatencyPoint]


class ServiceLatency(Strict):
    """A service's latency over time as this node's router observed it."""

    service: str
    slot_s: float = Field(description="width of each point's time slot")
    statistic: str = "p50 and p95 of total latency (first byte sent to last byte received)"
    series: list[LatencySeries]


class ServiceLoad(Strict):
    """A service's load here, the only input of the autoscaler: in-flight requests in all and
    per replica task, requests per second, tokens per second when the server reports usage."""

    service: str
    in_flight: int = 0
    per_replica: dict[str, int] = Field(default_factory=dict)
    requests_per_s: float = 0.0
    tokens_per_s: float | None = None
    window_s: float = 10.0
