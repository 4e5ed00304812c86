"""Quality figures and the latency matrix, computed from a real store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from computenet.model.pool import PoolSpec, Region
from computenet.node import netmeasure, quality
from computenet.node.tasks import utcnow
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(sqlite_url(tmp_path))
    upgrade(d)
    now = utcnow()
    with d.write() as s:
        s.add(t.Provider(prefix="cn/acme", name="acme", created_at=now))
        s.flush()
        s.add(t.Gateway(id="G1", provider_prefix="cn/acme", name="g", created_at=now))
        s.flush()
        for label, health in (("a", "healthy"), ("b", "unhealthy")):
            spec = PoolSpec(label=label, cpu_cores=4, memory_mib=1024, region=Region(code="31"))
            s.add(
                t.Pool(
                    cpi=f"cn/acme/{label}",
                    provider_prefix="cn/acme",
                    gateway_id="G1",
                    spec=spec.model_dump(mode="json"),
                    health=health,
                    running_tasks=0,
                    last_heartbeat_at=now - timedelta(seconds=3),
                    updated_at=now,
                    version=1,
                )
            )
    return d


def _task(s: Session, n: int, pool: str, state: str, wait_s: float) -> None:
    now = utcnow()
    created = now - timedelta(seconds=60)
    row = t.Task(
        id=f"cn-T{n}",
        seq=n,
        owner="admin",
        state=state,
        spec={"executors": [{"command": ["true"]}]},
        priority=0,
        cpu_cores=1,
        memory_mib=1,
        accelerators=0,
        attempt=1,
        pool_cpi=pool,
        reason="",
        cancel_requested=False,
        created_at=created,
        updated_at=now,
        started_at=created + timedelta(seconds=wait_s),
        ended_at=now,
        tags={},
    )
    s.add(row)


def test_availability_success_rate_and_reliability(db: Database) -> None:
    # Three samples: pool a healthy throughout; pool b healthy once, then not.
    assert quality.sample_pools(db, utcnow() - timedelta(seconds=20)) == 2
    with db.write() as s:
        s.execute(m.PoolSample.__table__.update().values(healthy=True))
    quality.sample_pools(db, utcnow() - timedelta(seconds=10))
    quality.sample_pools(db)
    with db.write() as s:
        _task(s, 1, "cn/acme/a", "COMPLETE", 2.0)
        _task(s, 2, "cn/acme/a", "COMPLETE", 4.0)
        _task(s, 3, "cn/acme/a", "EXECUTOR_ERROR", 6.0)
        _task(s, 4, "cn/acme/a", "CANCELED", 1.0)
    with db.write() as s:
        quality.record_queue_wait_estimate(s, "cn-T1", 1.0)
    figures = quality.pool_quality(db)
    a, b = figures["cn/acme/a"], figures["cn/acme/b"]
    assert (a.samples, a.availability) == (3, 1.0)
    assert b.availability == pytest.approx(1 / 3)
    assert (a.completed, a.failed, a.success_rate) == (2, 1, pytest.approx(2 / 3))
    assert a.queue_wait_s == pytest.approx(13 / 4)  # the cancelled task started too
    assert a.queue_wait_vs_estimate == pytest.approx(2.0)
    assert a.heartbeat_age_s is not None and a.heartbeat_age_s >= 3
    assert b.success_rate is None
    rel = quality.pool_reliability(db)
    assert rel["cn/acme/a"] == pytest.approx(1.0 * 3 / 5)
    assert rel["cn/acme/b"] == pytest.approx((1 / 3) * 1 / 2)
    prov = quality.provider_quality(db)["cn/acme"]
    assert prov.availability == pytest.approx(4 / 6)
    assert (prov.completed, prov.failed) == (2, 1)


def test_latency_matrix_averages_recent_samples(db: Database) -> None:
    assert netmeasure.gateway_region(db, "G1") == "31"
    netmeasure.record_rtt(db, "G1", "31", "11", 20.0)
    netmeasure.record_rtt(db, "G1", "31", "11", 30.0)
    netmeasure.record_rtt(db, "G1", "31", "44", 5.0)
    assert netmeasure.latency_matrix(db) == {("31", "11"): 25.0, ("31", "44"): 5.0}
    assert netmeasure.latency_matrix(db, window_s=0.0) == {}


def test_the_scheduler_sees_measured_reliability_and_latency(db: Database) -> None:
    from computenet.node.sched_inputs import ContextLoader
    from computenet.sched.network import modelled_link

    quality.sample_pools(db)  # b is unhealthy in its only sample: availability 0
    netmeasure.record_rtt(db, "G1", "31", "11", 42.0)
    with db.read() as s:
        ctx = ContextLoader(db).load(s)
        model_only = ContextLoader().load(s)
    assert ctx.telemetry["cn/acme/a"].reliability == pytest.approx(1.0 * 1 / 2)
    assert ctx.telemetry["cn/acme/b"].reliability == 0.0
    link = ctx.network[("11", "31")]  # measured one way, used both ways
    assert link.rtt_ms == 42.0
    assert link.bandwidth_mbps == modelled_link(1000.0, False).bandwidth_mbps
    assert model_only.network == {} and "cn/acme/b" not in model_only.telemetry
