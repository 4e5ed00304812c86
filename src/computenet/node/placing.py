"""The scheduling pass: load the core's inputs from the store, decide, write placements.

The pass's pure decision (:func:`computenet.tasks.placement.plan_pass`, over the scheduler
core) is the one the simulator makes; this module reads queued tasks, pools with their free
capacity and the context (telemetry, network, datasets, running work, reservations) into
its inputs, and applies the plan in one short, guarded transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from computenet.model.pool import Capacity, PoolHealth, PoolSpec
from computenet.model.task import TaskSpec
from computenet.node.quality import record_queue_wait_estimate
from computenet.node.sched_apply import LeaseLost, placed_message, preempt, spec_update
from computenet.node.sched_inputs import ContextLoader, tenant_of
from computenet.sched.core import PoolView, TaskView, shape_key
from computenet.sched.types import Context
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.tasks.capacity import held_capacity
from computenet.tasks.clock import Clock, utcnow
from computenet.tasks.lifecycle import Event, Phase
from computenet.tasks.placement import NO_POOLS, Waiting, plan_pass
from computenet.tasks.transitions import guard, move_by_id

SCHEDULE_BATCH = 2000
SPEC_CACHE_MAX = 100_000


class Placer:
    """Places queued tasks on pools, one pass at a time (the leader runs it)."""

    def __init__(
        self,
        db: Database,
        lease_lost: LeaseLost,
        clock: Clock = utcnow,
    ):
        self.db = db
        self.clock = clock
        # Preempting a leased task: bill what ran and re-queue it (the dispatcher's part).
        self._lease_lost = lease_lost
        # Parsed specs of queued tasks and pools, so a pass does not re-validate them.
        self._specs: dict[str, tuple[TaskSpec, object]] = {}  # parsed spec, shape key
        # Tasks up to this seq have been told "no pools"; only newer ones need telling while
        # there are still none, so a long backlog is not rescanned on every pass.
        self._told_no_pools_seq = 0
        # Whether the last pass found waiting tasks: the scheduling loop then spaces the next
        # pass to gather a burst; after an idle pass it runs the next one as soon as woken.
        self.found_work = False
        self._pool_specs: dict[str, tuple[int, PoolSpec]] = {}
        self._context = ContextLoader(db, clock=clock)
        # Federation: other nodes' pools, offered to the scheduler; a task placed on one is
        # forwarded to its owner by computenet.federation (the runtime sets this).
        self.remote_pools: Callable[[Session], list[PoolView]] = lambda _s: []

    def schedule_pass(self) -> int:
        """Assign queued tasks to pools with free capacity; return how many were placed.

        Reads and decides without holding the write lock, then applies the placements in
        one short transaction, each guarded so that a task cancelled meanwhile stays so.
        """
        self.found_work = False
        with self.db.read() as s:
            views = self.pool_views(s)
            if not views:
                self.found_work = self._explain_no_pools(s)
                return 0
            self._told_no_pools_seq = 0  # if the pools go away, every waiting task is told
            queued = list(
                s.execute(
                    select(
                        t.Task.id,
                        t.Task.priority,
                        t.Task.seq,
                        t.Task.reason,
                        t.Task.owner,
                        t.Task.tenant,
                    )
                    .where(guard(Phase.WAITING))
                    .order_by(t.Task.priority.desc(), t.Task.seq)
                    .limit(SCHEDULE_BATCH)
                )
            )
            if not queued:
                return 0
            self.found_work = True
            missing = [r.id for r in queued if r.id not in self._specs]
            if missing:
                if len(self._specs) > SPEC_CACHE_MAX:
                    self._specs.clear()
                rows = s.execute(select(t.Task.id, t.Task.spec).where(t.Task.id.in_(missing)))
                for tid, spec in rows:
                    parsed = TaskSpec.model_validate(spec)
                    self._specs[tid] = (parsed, shape_key(parsed))
            ctx = self.context(s)
        waiting = [
            Waiting(
                TaskView(r.id, spec, r.priority, r.seq, tenant_of(r.owner, r.tenant), key), r.reason
            )
            for r in queued
            for spec, key in (self._specs[r.id],)
        ]
        spec_of = {w.view.task_id: w.view.spec for w in waiting}
        # The decision is the pure one the simulator makes too (computenet.tasks.placement);
        # what follows is its apply step, on the store.
        plan = plan_pass(waiting, views, ctx)
        placements, reasons = plan.placements, plan.reasons
        if not placements and not reasons:
            return 0
        now = self.clock()
        placed = 0
        with self.db.write() as s:
            for d in placements:
                for victim in d.preempt:
                    preempt(s, victim, d.task_id, now, self._lease_lost)
                if move_by_id(
                    s,
                    d.task_id,
                    Phase.WAITING,
                    Event.PLACED,
                    now,
                    placed_message(d, spec_of[d.task_id]),
                    pool_cpi=d.pool,
                    reservation_id=d.reservation or None,
                    reason="",
                    **spec_update(spec_of[d.task_id], d.variant),
                ):
                    if d.estimate is not None:
                        record_queue_wait_estimate(s, d.task_id, d.estimate.wait_s)
                    placed += 1
                self._specs.pop(d.task_id, None)
            for d in reasons:
                s.execute(
                    update(t.Task)
                    .where(t.Task.id == d.task_id, guard(Phase.WAITING))
                    .values(reason=d.reason)
                )
        return placed

    def _explain_no_pools(self, read: Session) -> bool:
        """Tell queued tasks there is nowhere to run, writing only when a reason changes;
        True when there were tasks newer than the last told."""
        newest = read.scalar(select(func.max(t.Task.seq))) or 0
        if newest <= self._told_no_pools_seq:
            return False
        waiting = (
            t.Task.seq > self._told_no_pools_seq,
            t.Task.seq <= newest,
            guard(Phase.WAITING),
            t.Task.reason != NO_POOLS,
        )
        with self.db.write() as s:
            s.execute(update(t.Task).where(*waiting).values(reason=NO_POOLS))
        self._told_no_pools_seq = newest
        return True

    def pool_views(self, s: Session) -> list[PoolView]:
        """Every pool the scheduler may place on, here and (federated) elsewhere, with its
        free capacity, read in session ``s``."""
        return self._pool_views(s) + self.remote_pools(s)

    def context(self, s: Session) -> Context:
        """The scheduler's context (telemetry, network, datasets, running work)."""
        return self._context.load(s)

    def _pool_views(self, s: Session) -> list[PoolView]:
        """Every pool with its free capacity: its total less what placed and active tasks hold."""
        pools = list(s.execute(select(t.Pool.cpi, t.Pool.spec, t.Pool.health, t.Pool.version)))
        if not pools:
            return []
        used = held_capacity(s)
        views = []
        for cpi, raw, health, version in pools:
            cached = self._pool_specs.get(cpi)
            if cached is None or cached[0] != version:
                cached = (version, PoolSpec.model_validate(raw))
                self._pool_specs[cpi] = cached
            spec = cached[1]
            free = spec.total().minus(used.get(cpi, Capacity()))
            views.append(PoolView(cpi, spec, PoolHealth(health), free))
        return views
