"""Build the scheduler core's :class:`Context` from the store.

Queue wait and reliability come from each pool's task history, datasets from the registry,
running work (for preemption and fair share) from placed and active tasks. The network
matrix is left to the core's distance model until measured links are fed in.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computenet.model.pool import Capacity
from computenet.model.task import TaskState
from computenet.sched.fairshare import units
from computenet.sched.types import Context, Dataset, PoolTelemetry, RunningTask, TenantShare
from computenet.store import tables as t
from computenet.store.tables_sched import Dataset as DatasetRow

HISTORY = 2000  # recent starts looked at for queue wait
LIVE = (
    TaskState.QUEUED.value,
    TaskState.INITIALIZING.value,
    TaskState.RUNNING.value,
    TaskState.CANCELING.value,
)
GOOD = (TaskState.COMPLETE.value, TaskState.EXECUTOR_ERROR.value)  # the pool did its part
COUNTED = (*GOOD, TaskState.SYSTEM_ERROR.value, TaskState.PREEMPTED.value)


def tenant_of(owner: str, spec: dict[str, Any]) -> str:
    """A task's fair-share tenant: ``placement.tenant`` if set, else the submitting owner."""
    placement = spec.get("placement") or {}
    tenant = placement.get("tenant")
    return str(tenant) if tenant else owner


def telemetry(s: Session) -> dict[str, PoolTelemetry]:
    """Per pool: mean queue wait of recent starts, and reliability (good + 1) / (counted + 2)."""
    waits: dict[str, list[float]] = defaultdict(list)
    recent = s.execute(
        select(t.Task.pool_cpi, t.Task.created_at, t.Task.started_at)
        .where(t.Task.started_at.is_not(None), t.Task.pool_cpi.is_not(None))
        .order_by(t.Task.seq.desc())
        .limit(HISTORY)
    )
    for cpi, created, started in recent:
        assert cpi is not None and started is not None  # by the query
        waits[cpi].append(max(0.0, (started - created).total_seconds()))
    outcomes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cpi, state, n in s.execute(
        select(t.Task.pool_cpi, t.Task.state, func.count())
        .where(t.Task.pool_cpi.is_not(None), t.Task.state.in_(COUNTED))
        .group_by(t.Task.pool_cpi, t.Task.state)
    ):
        assert cpi is not None
        outcomes[cpi][1] += n
        if state in GOOD:
            outcomes[cpi][0] += n
    out = {}
    for cpi in set(waits) | set(outcomes):
        w = waits.get(cpi, [])
        good, counted = outcomes.get(cpi, [0, 0])
        out[cpi] = PoolTelemetry(
            queue_wait_s=sum(w) / len(w) if w else 0.0,
            reliability=(good + 1) / (counted + 2),
        )
    return out


def datasets(s: Session) -> dict[str, Dataset]:
    """The dataset registry as the core's :class:`Dataset` values."""
    return {
        r.name: Dataset(r.name, r.size_bytes, tuple(r.regions))
        for r in s.scalars(select(DatasetRow))
    }


def running(s: Session) -> list[RunningTask]:
    """Work placed on or running in pools, with whether it may be preempted."""
    rows = s.execute(
        select(
            t.Task.id,
            t.Task.pool_cpi,
            t.Task.cpu_cores,
            t.Task.memory_mib,
            t.Task.accelerators,
            t.Task.priority,
            t.Task.owner,
            t.Task.spec,
        ).where(t.Task.pool_cpi.is_not(None), t.Task.state.in_(LIVE))
    )
    out = []
    for tid, cpi, cpu, mem, acc, prio, owner, spec in rows:
        res = spec.get("resources") or {}
        out.append(
            RunningTask(
                task_id=tid,
                pool=cpi,
                need=Capacity(cpu_cores=cpu, memory_mib=mem, accelerators=acc),
                preemptible=bool(res.get("preemptible")),
                priority=prio,
                tenant=tenant_of(owner, spec),
            )
        )
    return out


def load_context(s: Session) -> Context:
    """The scheduler's context as the store knows it now."""
    work = running(s)
    usage: dict[str, float] = defaultdict(float)
    for r in work:
        usage[r.tenant] += units(r.need.accelerators, r.need.cpu_cores)
    return Context(
        telemetry=telemetry(s),
        datasets=datasets(s),
        tenants={k: TenantShare(usage=v) for k, v in usage.items()},
        running=work,
    )
