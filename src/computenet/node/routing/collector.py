"""The metric plane on ``/metrics``: per-replica gauges and latency histograms, read at
scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from computenet.node.routing.latency import BOUNDS_MS

if TYPE_CHECKING:
    from computenet.node.routing.plane import MetricPlane


class PlaneCollector(Collector):
    """Per-replica gauges read at scrape time."""

    def __init__(self, plane: MetricPlane) -> None:
        """Read ``plane`` at each scrape."""
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        """The families, as the plane stands now."""
        inflight = GaugeMetricFamily(
            "computenet_service_replica_in_flight",
            "Requests in flight on each replica a gateway of this node runs",
            labels=["task"],
        )
        healthy = GaugeMetricFamily(
            "computenet_service_replica_healthy",
            "1 when a replica is routable: live tunnel, recent report, passing checks",
            labels=["task"],
        )
        rps = GaugeMetricFamily(
            "computenet_service_replica_requests_per_second",
            "Requests per second on each replica over the metric window",
            labels=["task"],
        )
        for task_id, rep in self.plane.known():
            inflight.add_metric([task_id], self.plane.in_flight(task_id))
            healthy.add_metric([task_id], 1.0 if self.plane.healthy(task_id) else 0.0)
            rps.add_metric([task_id], rep.rate(self.plane.settings.window_s)[0])
        yield inflight
        yield healthy
        yield rps
        latency = HistogramMetricFamily(
            "computenet_service_latency_seconds",
            "Request latency the router observed, to a replica (task id) or a node it forwards "
            "to (node:<code>), by phase: ttfb (to the first byte) or total (to the last)",
            labels=["target", "phase"],
        )
        for target, lat in self.plane.latencies():
            for phase, counts in lat.counts.items():
                cumulative, buckets = 0, []
                for bound, c in zip([*BOUNDS_MS, float("inf")], counts, strict=True):
                    cumulative += c
                    buckets.append((str(bound / 1000), cumulative))
                buckets[-1] = ("+Inf", cumulative)
                latency.add_metric([target, phase], buckets, lat.sum_ms[phase] / 1000)
        yield latency
