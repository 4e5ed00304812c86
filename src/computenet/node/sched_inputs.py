"""Build the scheduler core's :class:`Context` from the store.

Queue wait and reliability come from each pool's task history (or the monitor's figures),
datasets from the registry, running work (for preemption and fair share) from placed and
active tasks, tenants' weights and quotas from the operators' settings, advance reservations
from the ledger's bookings, and measured round-trip times replace the distance model's.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computenet.model.pool import Capacity
from computenet.model.task import TaskState
from computenet.node.netmeasure import latency_matrix
from computenet.node.quality import pool_reliability
from computenet.sched.fairshare import units
from computenet.sched.network import modelled_link, provinces
from computenet.sched.types import (
    Context,
    Dataset,
    Link,
    PoolTelemetry,
    Reservation,
    RunningTask,
    TenantShare,
)
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import Reservation as ReservationRow
from computenet.store.tables_sched import Dataset as DatasetRow
from computenet.store.tables_sched import ShareSetting
from computenet.tasks.clock import Clock, utcnow
from computenet.tasks.lifecycle import LIVE_STATES

HISTORY = 2000  # recent starts looked at for queue wait
TELEMETRY_TTL_S = 5.0
LIVE = LIVE_STATES
GOOD = (TaskState.COMPLETE.value, TaskState.EXECUTOR_ERROR.value)  # the pool did its part
COUNTED = (*GOOD, TaskState.SYSTEM_ERROR.value, TaskState.PREEMPTED.value)


def tenant_of(owner: str, tenant: str | None) -> str:
    """A task's fair-share tenant: the tenant of the token that submitted it (who also pays),
    else the submitting owner."""
    return tenant or owner


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
            t.Task.tenant,
            t.Task.spec,
        ).where(t.Task.pool_cpi.is_not(None), t.Task.state.in_(LIVE))
    )
    out = []
    for tid, cpi, cpu, mem, acc, prio, owner, tenant, spec in rows:
        res = spec.get("resources") or {}
        out.append(
            RunningTask(
                task_id=tid,
                pool=cpi,
                need=Capacity(cpu_cores=cpu, memory_mib=mem, accelerators=acc),
                preemptible=bool(res.get("preemptible")),
                priority=prio,
                tenant=tenant_of(owner, tenant),
            )
        )
    return out


def reservations(s: Session, now: datetime) -> list[Reservation]:
    """Booked reservations not yet over, each with the cards its own work does not hold."""
    rows = list(
        s.scalars(
            select(ReservationRow).where(
                ReservationRow.state == "booked", ReservationRow.ends_at > now
            )
        )
    )
    if not rows:
        return []
    used: dict[str | None, int] = {
        rid: int(n or 0)
        for rid, n in s.execute(
            select(t.Task.reservation_id, func.sum(t.Task.accelerators))
            .where(
                t.Task.reservation_id.in_([r.id for r in rows]),
                t.Task.pool_cpi.is_not(None),
                t.Task.state.in_(LIVE),
            )
            .group_by(t.Task.reservation_id)
        )
    }
    return [
        Reservation(
            reservation_id=r.id,
            pool=r.pool_cpi,
            tenant=r.tenant,
            free_cards=max(0, r.cards - used.get(r.id, 0)),
            start_in_s=(r.starts_at - now).total_seconds(),
            end_in_s=(r.ends_at - now).total_seconds(),
        )
        for r in rows
    ]


def tenant_shares(s: Session, work: list[RunningTask]) -> dict[str, TenantShare]:
    """Each tenant's weight and quota (as an operator set them; else 1 and none) with what
    its placed and running work holds."""
    usage: dict[str, float] = defaultdict(float)
    for r in work:
        usage[r.tenant] += units(r.need.accelerators, r.need.cpu_cores)
    settings = {row.tenant: row for row in s.scalars(select(ShareSetting))}
    return {
        k: TenantShare(
            weight=settings[k].weight if k in settings else 1.0,
            usage=usage.get(k, 0.0),
            quota=settings[k].quota_cards if k in settings else None,
        )
        for k in set(usage) | set(settings)
    }


class ContextLoader:
    """Loads the context, re-reading pool history (a scan of finished tasks), the monitor's
    quality figures and measured round-trip times at most every ``telemetry_ttl_s``; running
    work and datasets are read fresh every time.

    With a database, each pool's reliability is the monitor's figure (availability x
    smoothed success rate, :func:`computenet.node.quality.pool_reliability`) where it has
    one, and measured round-trip times between regions
    (:func:`computenet.node.netmeasure.latency_matrix`) replace the distance model's, both
    ways, keeping the model's bandwidth.
    """

    def __init__(
        self,
        db: Database | None = None,
        telemetry_ttl_s: float = TELEMETRY_TTL_S,
        clock: Clock = utcnow,
    ):
        self.db = db
        self.clock = clock
        self.ttl_s = telemetry_ttl_s
        self._cached: tuple[float, dict[str, PoolTelemetry], dict[tuple[str, str], Link]] | None
        self._cached = None

    def load(self, s: Session) -> Context:
        """The scheduler's context as the store knows it now."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self.ttl_s:
            pools = telemetry(s)
            network: dict[tuple[str, str], Link] = {}
            if self.db is not None:
                for cpi, reliability in pool_reliability(self.db).items():
                    wait = pools[cpi].queue_wait_s if cpi in pools else 0.0
                    pools[cpi] = PoolTelemetry(queue_wait_s=wait, reliability=reliability)
                network = measured_links(latency_matrix(self.db))
            self._cached = (now, pools, network)
        context = load_context(s, self._cached[1], self.clock())
        return replace(context, network=self._cached[2])


def measured_links(rtt_ms: dict[tuple[str, str], float]) -> dict[tuple[str, str], Link]:
    """Measured round-trip times as links (both directions), with the model's bandwidth."""
    prov = provinces()
    links: dict[tuple[str, str], Link] = {}
    for (a, b), rtt in rtt_ms.items():
        i, j = prov.of(a), prov.of(b)
        if i < 0 or j < 0:
            continue
        bandwidth = modelled_link(0.0, i == j).bandwidth_mbps
        links[(a, b)] = links[(b, a)] = Link(rtt_ms=rtt, bandwidth_mbps=bandwidth)
    return links


def load_context(
    s: Session,
    pool_telemetry: dict[str, PoolTelemetry] | None = None,
    now: datetime | None = None,
) -> Context:
    """The scheduler's context as the store knows it at ``now`` (the wall clock if None)."""
    work = running(s)
    return Context(
        telemetry=telemetry(s) if pool_telemetry is None else pool_telemetry,
        datasets=datasets(s),
        tenants=tenant_shares(s, work),
        running=work,
        reservations=reservations(s, now or utcnow()),
    )
