"""Router-observed latency: fixed-bucket histograms in time slots, their quantiles, the CATS
metrics and time series made of them, and their /metrics exposition."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from computenet.model.service import ServiceBinding
from computenet.node.routing.config import RoutingSettings
from computenet.node.routing.latency import (
    BOUNDS_MS,
    HISTORY_S,
    SLOT_S,
    Latency,
    latency_metrics,
    latency_points,
    quantile_ms,
)
from computenet.node.routing.plane import MetricPlane
from svcserve import Listed, Placed


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _bucket_of(ms: float) -> tuple[float, float]:
    for i, hi in enumerate(BOUNDS_MS):
        if ms <= hi:
            return (BOUNDS_MS[i - 1] if i else 0.0), hi
    return BOUNDS_MS[-1], BOUNDS_MS[-1]


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_a_quantile_falls_in_the_bucket_of_the_exact_one(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(2.5, 1.0) for _ in range(5000)]  # a long-tailed latency
    lat = Latency()
    for v in values:
        lat.observe(100.0, v, v * 2)
    got = quantile_ms(lat.window(100.0, 10.0, "ttfb"), q)
    lo, hi = _bucket_of(_exact(values, q))
    assert got is not None and lo <= got <= hi, (got, lo, hi)


def test_empty_and_overflowing_histograms() -> None:
    assert quantile_ms([0] * (len(BOUNDS_MS) + 1), 0.5) is None
    lat = Latency()
    lat.observe(0.0, 10**6, 10**6)  # past the last bound: answers with the last bound
    assert quantile_ms(lat.window(0.0, 10.0, "total"), 0.99) == BOUNDS_MS[-1]


def test_the_window_forgets_old_slots_and_history_is_bounded() -> None:
    lat = Latency()
    lat.observe(0.0, 1000.0, 1000.0)  # slow, long ago
    for _ in range(10):
        lat.observe(60.0, 1.0, 2.0)  # fast, now
    p99 = quantile_ms(lat.window(60.0, 10.0, "ttfb"), 0.99)
    assert p99 is not None and p99 <= 1.0
    for now in range(0, 3 * HISTORY_S, SLOT_S):
        lat.observe(float(now), 1.0, 1.0)
    assert len(lat.slots) <= HISTORY_S // SLOT_S + 2
    assert sum(lat.counts["total"]) == 11 + 3 * HISTORY_S // SLOT_S  # all-time counts stay


def test_cats_metrics_and_series() -> None:
    a, b = Latency(), Latency()
    for _ in range(100):
        a.observe(50.0, 4.0, 9.0)
        b.observe(57.0, 40.0, 90.0)
    raw = {(m.name, m.statistic): m for m in latency_metrics([a, b], 58.0, 10.0, "node:cn")}
    assert set(raw) == {
        (f"latency_{p}_ms", f"p{q}") for p in ("ttfb", "total") for q in (50, 95, 99)
    }
    assert all(
        m.source == "node:cn" and m.window_s == 10.0 and m.unit == "ms" for m in raw.values()
    )
    p50, p95 = raw["latency_total_ms", "p50"].value, raw["latency_total_ms", "p95"].value
    assert p50 is not None and p95 is not None and 5 < p50 <= 12 < 75 < p95 <= 100
    points = latency_points([a, b], 58.0, 1_000_000.0)
    assert [p.at for p in points] == [1_000_000.0 - 8, 1_000_000.0 - 3]  # slots 50 and 55
    assert [p.requests for p in points] == [100, 100]
    assert points[0].p95_ms <= 12 and 75 < points[1].p50_ms <= 100


def test_the_plane_publishes_latency_on_metrics() -> None:
    now = [1000.0]
    registry = CollectorRegistry()
    plane = MetricPlane(RoutingSettings(), "cn", "11", registry, clock=lambda: now[0])
    plane.report("gw1", {"replicas": {"cn.t0": {"healthy": True}}})
    plane.observe("cn.t0", 3.0, 7.0)
    plane.observe("cn.sh", 30.0, 70.0)  # forwarded to node cn.sh
    text = generate_latest(registry).decode()
    assert (
        'computenet_service_latency_seconds_bucket{le="0.008",phase="total",target="cn.t0"} 1.0'
        in text
    )
    assert 'computenet_service_latency_seconds_count{phase="ttfb",target="node:cn.sh"} 1.0' in text
    assert 'computenet_service_latency_seconds_sum{phase="total",target="node:cn.sh"} 0.07' in text


def test_a_child_report_decides_a_remote_replicas_health_until_it_is_stale() -> None:
    now = [1000.0]
    plane = MetricPlane(RoutingSettings(), "cn", "11", clock=lambda: now[0])
    listed = Listed()
    plane.directory = listed
    plane.settings.directory_ttl_s = 0.0
    binding = ServiceBinding(name="echo", replica=0, home_node="cn")
    listed.placed["echo"] = [Placed("cn.t1", binding, None, "cn.sh", "31")]
    plane.replicas("echo")
    assert plane.healthy("cn.t1")  # no word from the child: healthy while it answers
    plane.child_report("cn.sh", {"replicas": {"cn.t1": {"healthy": False, "in_flight": 6}}})
    [site] = plane.sites("echo", "11")
    assert not plane.healthy("cn.t1") and site.healthy_replicas == 0 and site.in_flight == 6
    plane.child_report("cn.gz", {"replicas": {"cn.t1": {"healthy": True}}})  # not its replica
    assert not plane.healthy("cn.t1")
    now[0] += plane.settings.stale_s + 0.1  # the child fell silent: its word no longer counts
    assert plane.healthy("cn.t1")
    assert plane.site_metrics("echo", "11")[0].health_age_s is None
