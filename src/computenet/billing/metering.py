"""Continuous accrual for running service replicas.

A usage record is written when an attempt ends, and a replica's attempt runs a whole segment
(24 h by default), so without this a tenant's bill would show nothing for a replica that has
run all day. Each metering round bills every *elapsed* interval of every replica running on
this node's gateways: interval k covers the attempt's seconds ``[k * length, (k + 1) * length)``
from its start, and is billed as the attempt's usage measured at its end less that measured
at its start. The closing charge is the attempt's measured usage less what the intervals
billed (``Ledger.charge``), so intervals and closing charge add up to the attempt's usage
exactly. Each interval is a row keyed by (task, attempt, interval) with a unique constraint:
a round run twice, or again after a restart, bills no interval twice, and an interval missed
while the node was down is billed by the next round (none is skipped).

The router's request counts of each replica ride along: each row carries the requests the
replica served since the previous row. Every process of a node meters (the task's row lock and
the unique keys make that safe); one that bills no interval of a replica (another process of
the node, on one PostgreSQL, billed it first) writes its counts on a row of requests only
(negative interval index, no usage, no charge) at most once an interval, and so does any
process for the last partial interval once the replica no longer runs. Counts live in memory
between rounds, so a crash loses at most one round's counts; usage is never lost (it is
derived from the attempt's start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computenet.billing.ledger import Ledger, period_of
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState
from computenet.model.usage import Usage, measure_usage
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import InterimUsage
from computenet.store.tables_federation import FedForward

log = logging.getLogger("computenet.billing")
SERVICE_TASK_PREFIX = "service/"  # replica tasks are named service/<name>/<version>/<replica>
# An attempt that somehow claims to have run for longer is billed this many intervals a round
# at most (the rest in the next rounds): a round's work stays bounded.
MAX_INTERVALS_PER_ROUND = 1000


def due_intervals(
    started_at: datetime, now: datetime, interval_s: int, done: Iterable[int]
) -> list[int]:
    """The intervals of an attempt started at ``started_at`` that have fully elapsed by
    ``now`` and are not in ``done``, oldest first (at most ``MAX_INTERVALS_PER_ROUND``)."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    elapsed_s = (now - started_at).total_seconds()
    whole = int(elapsed_s // interval_s) if elapsed_s > 0 else 0
    billed = set(done)
    return [k for k in range(whole) if k not in billed][:MAX_INTERVALS_PER_ROUND]


def measure_attempt(s: Session, row: t.Task, wall_s: Decimal) -> Usage:
    """The usage of ``row``'s current attempt had it run ``wall_s`` seconds: what the task
    held (from the task and its pool, so a gateway cannot bill cards it never had)."""
    assert row.pool_cpi is not None
    pool = s.get(t.Pool, row.pool_cpi)
    spec = PoolSpec.model_validate(pool.spec) if pool is not None else None
    acc = spec.accelerator if spec is not None else None
    billed_acc = acc is not None and row.accelerators > 0
    measured = spec.measured if spec is not None and billed_acc else None
    return measure_usage(
        wall_s=wall_s,
        cards=row.accelerators if acc is not None else 0,
        accelerator_model=acc.model if acc is not None and billed_acc else None,
        cpu_cores=row.cpu_cores,
        memory_mib=row.memory_mib,
        measured_fp16_tflops=measured.fp16_tflops if measured is not None else None,
    )


@dataclass(frozen=True)
class IntervalUsage:
    """What one interval of an attempt used: usage at its end less usage at its start."""

    accelerator_model: str | None
    cards: int
    wall_s: Decimal
    card_hours: Decimal
    cpu_core_hours: Decimal
    pflops_hours_fp16: Decimal | None


def interval_usage(s: Session, row: t.Task, index: int, interval_s: int) -> IntervalUsage:
    """Interval ``index`` of ``row``'s attempt. Differences of cumulative measurements, so
    the sum over intervals 0..k is exactly the usage of (k + 1) intervals, rounding included."""
    start = measure_attempt(s, row, Decimal(index * interval_s))
    end = measure_attempt(s, row, Decimal((index + 1) * interval_s))
    pflops = None
    if end.pflops_hours_fp16 is not None and start.pflops_hours_fp16 is not None:
        pflops = end.pflops_hours_fp16 - start.pflops_hours_fp16
    return IntervalUsage(
        accelerator_model=end.accelerator_model,
        cards=end.cards,
        wall_s=end.wall_s - start.wall_s,
        card_hours=end.card_hours - start.card_hours,
        cpu_core_hours=end.cpu_core_hours - start.cpu_core_hours,
        pflops_hours_fp16=pflops,
    )


def service_of(row: t.Task) -> str | None:
    """The service a task is a replica of, or None for any other task."""
    binding = TaskSpec.model_validate(row.spec).service
    return binding.name if binding is not None else None


class Meter:
    """Bills the elapsed intervals of the service replicas this node runs.

    ``served`` returns the requests each replica (task id) served through this node's
    router since the process started; the node's services loop calls :meth:`tick`.
    """

    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        interval_s: int,
        clock: Callable[[], datetime],
        served: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.db = db
        self.ledger = ledger
        self.interval_s = interval_s
        self.clock = clock
        self.served = served
        self._written: dict[str, int] = {}  # task id -> requests written to rows so far
        self._flushed_at: dict[str, datetime] = {}  # task id -> when its counts were written

    def tick(self) -> int:
        """One metering round; returns how many rows it wrote."""
        now = self.clock()
        served = dict(self.served())
        with self.db.read() as s:
            running = list(
                s.execute(
                    select(t.Task.id, t.Task.attempt, t.Task.started_at, t.Task.spec).where(
                        t.Task.state == TaskState.RUNNING.value,
                        t.Task.name.startswith(SERVICE_TASK_PREFIX, autoescape=True),
                        t.Task.started_at.is_not(None),
                        # A replica forwarded elsewhere is metered by the node that runs it;
                        # its signed interim usage comes back with its state.
                        t.Task.id.not_in(select(FedForward.task_id)),
                    )
                )
            )
            # Only a node's service controller sets a binding: a user's task that merely
            # has such a name is not a replica.
            running = [r for r in running if isinstance(r[3], dict) and r[3].get("service")]
            done: dict[tuple[str, int], set[int]] = {}
            ids = [r[0] for r in running]
            for tid, attempt, index in s.execute(
                select(
                    InterimUsage.task_id, InterimUsage.attempt, InterimUsage.interval_index
                ).where(InterimUsage.task_id.in_(ids))
            ):
                done.setdefault((tid, attempt), set()).add(index)
        wrote = 0
        live = set()
        for tid, attempt, started_at, _spec in running:
            assert started_at is not None
            live.add(tid)
            due = due_intervals(started_at, now, self.interval_s, done.get((tid, attempt), ()))
            billed = self._bill(tid, attempt, due, served.get(tid, 0), now) if due else 0
            last = self._flushed_at.setdefault(tid, now)
            pending = served.get(tid, 0) > self._written.get(tid, 0)
            if not billed and pending and (now - last).total_seconds() >= self.interval_s:
                billed = self._requests_only(tid, served[tid], now)
            wrote += billed
        for tid, count in served.items():
            if tid not in live and count > self._written.get(tid, 0):
                wrote += self._requests_only(tid, count, now)
        return wrote

    def _bill(self, tid: str, attempt: int, due: list[int], served: int, now: datetime) -> int:
        with self.db.write() as s:
            # Locked, then checked again: the attempt may have ended (and its closing charge
            # taken what the intervals had not) since the read above.
            row = s.get(t.Task, tid, with_for_update=True)
            if row is None or row.state != TaskState.RUNNING.value or row.attempt != attempt:
                return 0
            service = service_of(row)
            if service is None or row.pool_cpi is None:
                return 0
            taken = set(
                s.scalars(
                    select(InterimUsage.interval_index).where(
                        InterimUsage.task_id == tid, InterimUsage.attempt == attempt
                    )
                )
            )
            requests = max(0, served - self._written.get(tid, 0))
            wrote = 0
            for index in due:
                if index in taken:
                    continue
                u = interval_usage(s, row, index, self.interval_s)
                usage = self._row(row, service, index, u, requests, now)
                requests = 0  # the counts go on the first row written
                s.add(usage)
                self.ledger.charge_interim(s, row, usage, now)
                wrote += 1
        if wrote:
            self._written[tid] = max(served, self._written.get(tid, 0))
            self._flushed_at[tid] = now
        return wrote

    def _requests_only(self, tid: str, served: int, now: datetime) -> int:
        """Requests no interval row of this process carried: a row of requests only, at a
        negative index (-1, -2, ...) so that it never stands in for an interval."""
        with self.db.write() as s:
            row = s.get(t.Task, tid, with_for_update=True)
            service = service_of(row) if row is not None else None
            if row is None or service is None or row.pool_cpi is None:
                self._written[tid] = served
                return 0
            first = s.scalar(
                select(func.min(InterimUsage.interval_index)).where(
                    InterimUsage.task_id == tid, InterimUsage.attempt == row.attempt
                )
            )
            index = -1 if first is None or first >= 0 else first - 1
            none = IntervalUsage(None, row.accelerators, Decimal(0), Decimal(0), Decimal(0), None)
            requests = served - self._written.get(tid, 0)
            s.add(self._row(row, service, index, none, requests, now))
        self._written[tid] = served
        self._flushed_at[tid] = now
        return 1

    @staticmethod
    def _row(
        row: t.Task, service: str, index: int, u: IntervalUsage, requests: int, now: datetime
    ) -> InterimUsage:
        assert row.pool_cpi is not None
        return InterimUsage(
            task_id=row.id,
            attempt=row.attempt,
            interval_index=index,
            service=service,
            tenant=row.tenant or row.owner,
            pool_cpi=row.pool_cpi,
            accelerator_model=u.accelerator_model,
            cards=u.cards,
            wall_s=u.wall_s,
            card_hours=u.card_hours,
            cpu_core_hours=u.cpu_core_hours,
            pflops_hours_fp16=u.pflops_hours_fp16,
            requests=requests,
            period=period_of(now),
            created_at=now,
        )


def metering_period_s(interval_s: int) -> float:
    """How often the node runs a metering round: often enough that an interval is billed
    soon after it elapses, at most every 30 s."""
    return float(min(30.0, max(1.0, interval_s / 10)))
