"""Prometheus metrics of a node, on its own registry (several nodes may share a process).

Counters and histograms are updated as things happen; task and pool gauges are read from
the store at scrape time, so they are right after a restart too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from computenet.model.task import TaskState
from computenet.node.http_errors import StatusWatch
from computenet.node.metrics_ops import OpsCollector
from computenet.node.tasks import utcnow
from computenet.store import tables as t
from computenet.store.db import Database

WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StoreCollector(Collector):
    """Task counts by state, pool counts by health and heartbeat ages, read at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "computenet_tasks", "Tasks in the store by state", labels=["state"]
        )
        pools = GaugeMetricFamily("computenet_pools", "Pools by health", labels=["health"])
        age = GaugeMetricFamily(
            "computenet_pool_heartbeat_age_seconds",
            "Seconds since each pool's last heartbeat",
            labels=["pool"],
        )
        now = utcnow()
        with self.db.read() as s:
            counts = {
                k: v
                for k, v in s.execute(select(t.Task.state, func.count()).group_by(t.Task.state))
            }
            health = {
                k: v
                for k, v in s.execute(select(t.Pool.health, func.count()).group_by(t.Pool.health))
            }
            beats: list[tuple[str, datetime | None]] = list(
                s.execute(select(t.Pool.cpi, t.Pool.last_heartbeat_at))
            )
        for state in TaskState:
            tasks.add_metric([state.value], counts.get(state.value, 0))
        for h in ("healthy", "unhealthy"):
            pools.add_metric([h], health.get(h, 0))
        for cpi, hb in beats:
            if hb is not None:
                age.add_metric([cpi], (now - hb).total_seconds())
        yield tasks
        yield pools
        yield age


class NodeMetrics:
    """Every metric a node exports."""

    def __init__(self, db: Database) -> None:
        r = self.registry = CollectorRegistry()
        self.submitted = Counter(
            "computenet_tasks_submitted", "Tasks accepted by this node", registry=r
        )
        self.finished = Counter(
            "computenet_tasks_finished", "Tasks that ended, by final state", ["state"], registry=r
        )
        self.started = Counter(
            "computenet_tasks_started", "Task attempts that began running", registry=r
        )
        self.queue_wait = Histogram(
            "computenet_queue_wait_seconds",
            "Time from submission to running",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.placement = Histogram(
            "computenet_placement_pass_seconds",
            "Duration of one scheduling pass",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.placed = Counter("computenet_tasks_placed", "Placements onto pools", registry=r)
        self.lease_renewals = Counter(
            "computenet_lease_renewals", "Leases renewed by gateway heartbeats", registry=r
        )
        self.leases_lost = Counter(
            "computenet_leases_lost",
            "Leases a heartbeat named that were no longer held",
            registry=r,
        )
        self.heartbeats = Counter(
            "computenet_gateway_heartbeats", "Heartbeats received from gateways", registry=r
        )
        self.gateway_rtt = Gauge(
            "computenet_gateway_rtt_ms",
            "Last RTT each gateway measured to us",
            ["gateway"],
            registry=r,
        )
        self.sync_lag = Gauge(
            "computenet_sync_lag_seconds",
            "Seconds since the last successful sync exchange with each federation peer",
            ["peer"],
            registry=r,
        )
        self.errors = Counter(
            "computenet_errors",
            "Errors: HTTP 5xx answers and failed background work",
            ["where"],
            registry=r,
        )
        self.requests = Counter(
            "computenet_http_requests",
            "HTTP requests answered, by status class",
            ["status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "computenet_http_request_seconds", "HTTP request duration", registry=r
        )
        r.register(StoreCollector(db))
        r.register(OpsCollector(db))


class MetricsMiddleware:
    """Counts HTTP answers by status class and times them; 5xx answers count as errors."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        watch = StatusWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        finally:
            status = watch.status
            self.metrics.request_seconds.observe(time.perf_counter() - began)
            self.metrics.requests.labels(f"{status // 100}xx").inc()
            if status >= 500:
                self.metrics.errors.labels("http").inc()
