"""Quality metrics per pool and provider, kept over time.

Definitions (over a window, one hour unless told otherwise):

- availability: the fraction of periodic samples in which the pool was healthy, i.e. its
  gateway heartbeated within the node's timeout and vouched for it. No samples: unknown.
- success rate: COMPLETE / (COMPLETE + EXECUTOR_ERROR + SYSTEM_ERROR) over tasks that ended
  on the pool in the window; cancelled tasks do not count.
- queue wait: started_at - created_at of tasks that started in the window (mean), and its ratio
  to the scheduler's estimate where one was stored (``record_queue_wait_estimate``).
- time to first log byte: first log text received - started_at (mean).
- heartbeat freshness: seconds since the pool's last heartbeat, now.

``pool_reliability`` folds availability and success rate into one [0, 1] figure per pool
for the scheduler's reliability estimate.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.orm import Session

from computenet.model.pool import PoolHealth
from computenet.model.task import TaskState
from computenet.node.tasks import utcnow
from computenet.node.tracing import new_trace_id
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database

WINDOW_S = 3600.0
RETENTION_S = 7 * 24 * 3600.0
FAILED = (TaskState.EXECUTOR_ERROR.value, TaskState.SYSTEM_ERROR.value)


class Quality(BaseModel):
    """Quality figures of one pool or provider; None where there is nothing to measure."""

    availability: float | None = None
    samples: int = 0
    success_rate: float | None = None
    completed: int = 0
    failed: int = 0
    queue_wait_s: float | None = None
    queue_wait_vs_estimate: float | None = None
    first_log_s: float | None = None
    heartbeat_age_s: float | None = None


def sample_pools(db: Database, now: datetime | None = None) -> int:
    """Record one health sample per pool and drop samples past retention; return the count."""
    now = now or utcnow()
    with db.read() as s:
        pools = list(
            s.execute(
                select(
                    t.Pool.cpi,
                    t.Pool.provider_prefix,
                    t.Pool.health,
                    t.Pool.last_heartbeat_at,
                    t.Pool.running_tasks,
                )
            )
        )
    rows = [
        {
            "pool_cpi": p.cpi,
            "provider_prefix": p.provider_prefix,
            "at": now,
            "healthy": p.health == PoolHealth.HEALTHY.value,
            "heartbeat_age_s": (now - p.last_heartbeat_at).total_seconds()
            if p.last_heartbeat_at
            else None,
            "running_tasks": p.running_tasks,
        }
        for p in pools
    ]
    with db.write() as s:
        if rows:
            s.execute(insert(m.PoolSample), rows)
        s.execute(
            delete(m.PoolSample).where(m.PoolSample.at < now - timedelta(seconds=RETENTION_S))
        )
    return len(rows)


def record_queue_wait_estimate(s: Session, task_id: str, estimate_s: float) -> None:
    """Keep the scheduler's queue-wait estimate for a task (for queue wait vs estimate), in
    the transaction that places it."""
    row = s.get(m.TaskTiming, task_id)
    if row is None:
        # Its trace id may still wait in the monitor's buffer; the flush sets it.
        row = m.TaskTiming(task_id=task_id, trace_id=new_trace_id())
        s.add(row)
    row.queue_wait_estimate_s = estimate_s


def pool_quality(
    db: Database, window_s: float = WINDOW_S, cpis: list[str] | None = None
) -> dict[str, Quality]:
    """Quality figures for every pool (or the given ones) over the last ``window_s``."""
    now = utcnow()
    since = now - timedelta(seconds=window_s)
    out: dict[str, Quality] = {}
    with db.read() as s:
        pq = select(t.Pool.cpi, t.Pool.last_heartbeat_at)
        if cpis is not None:
            pq = pq.where(t.Pool.cpi.in_(cpis))
        for cpi, hb in s.execute(pq):
            out[cpi] = Quality(heartbeat_age_s=(now - hb).total_seconds() if hb else None)
        if not out:
            return out
        wanted = list(out)
        healthy = func.sum(case((m.PoolSample.healthy, 1), else_=0))
        for cpi, n, ok in s.execute(
            select(m.PoolSample.pool_cpi, func.count(), healthy)
            .where(m.PoolSample.at >= since, m.PoolSample.pool_cpi.in_(wanted))
            .group_by(m.PoolSample.pool_cpi)
        ):
            out[cpi].samples = int(n)
            out[cpi].availability = int(ok or 0) / int(n) if n else None
        for done_on, state, n in s.execute(
            select(t.Task.pool_cpi, t.Task.state, func.count())
            .where(
                t.Task.ended_at >= since,
                t.Task.pool_cpi.in_(wanted),
                t.Task.state.in_((TaskState.COMPLETE.value, *FAILED)),
            )
            .group_by(t.Task.pool_cpi, t.Task.state)
        ):
            q = out[str(done_on)]
            if state == TaskState.COMPLETE.value:
                q.completed += int(n)
            else:
                q.failed += int(n)
        waits: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        firsts: dict[str, list[float]] = {}
        for ran_on, created, started, est, first_log in s.execute(
            select(
                t.Task.pool_cpi,
                t.Task.created_at,
                t.Task.started_at,
                m.TaskTiming.queue_wait_estimate_s,
                m.TaskTiming.first_log_at,
            )
            .outerjoin(m.TaskTiming, m.TaskTiming.task_id == t.Task.id)
            .where(t.Task.started_at >= since, t.Task.pool_cpi.in_(wanted))
        ):
            if started is None or ran_on is None:
                continue
            wait = (started - created).total_seconds()
            waits.setdefault(ran_on, []).append(wait)
            if est:
                ratios.setdefault(ran_on, []).append(wait / est)
            if first_log is not None:
                first_s = (first_log - started).total_seconds()
                firsts.setdefault(ran_on, []).append(max(0.0, first_s))
    for cpi, q in out.items():
        done = q.completed + q.failed
        q.success_rate = q.completed / done if done else None
        q.queue_wait_s = statistics.fmean(waits[cpi]) if cpi in waits else None
        q.queue_wait_vs_estimate = statistics.fmean(ratios[cpi]) if cpi in ratios else None
        q.first_log_s = statistics.fmean(firsts[cpi]) if cpi in firsts else None
    return out


def provider_quality(db: Database, window_s: float = WINDOW_S) -> dict[str, Quality]:
    """Quality per provider: its pools' figures pooled (sample- and task-weighted)."""
    with db.read() as s:
        owner = {k: v for k, v in s.execute(select(t.Pool.cpi, t.Pool.provider_prefix))}
    out: dict[str, Quality] = {}
    healthy: dict[str, float] = {}
    for cpi, q in pool_quality(db, window_s).items():
        agg = out.setdefault(owner[cpi], Quality())
        agg.samples += q.samples
        healthy[owner[cpi]] = healthy.get(owner[cpi], 0.0) + (q.availability or 0.0) * q.samples
        agg.completed += q.completed
        agg.failed += q.failed
        if q.heartbeat_age_s is not None:
            agg.heartbeat_age_s = max(agg.heartbeat_age_s or 0.0, q.heartbeat_age_s)
    for prefix, agg in out.items():
        agg.availability = healthy[prefix] / agg.samples if agg.samples else None
        done = agg.completed + agg.failed
        agg.success_rate = agg.completed / done if done else None
    return out


def pool_reliability(db: Database, window_s: float = WINDOW_S) -> dict[str, float]:
    """Pool CPI -> reliability in [0, 1] for the scheduler.

    reliability = availability x smoothed success rate, where the success rate is
    (completed + 1) / (completed + failed + 2) so that a pool with few tasks is neither
    trusted nor condemned on one result. A pool with no samples yet counts as available.
    """
    out = {}
    for cpi, q in pool_quality(db, window_s).items():
        available = 1.0 if q.availability is None else q.availability
        success = (q.completed + 1) / (q.completed + q.failed + 2)
        out[cpi] = available * success
    return out
