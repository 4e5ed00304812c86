"""The node's monitoring: metrics hooks, task trace ids, quality samples and RTTs.

The API routes and the runtime's loops call these hooks after the work they describe is
committed; a hook never changes what the caller does, and a failing hook only logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec

from sqlalchemy import insert, select

from computenet.model.protocol import Heartbeat, HeartbeatReply, LeasedTask, TaskReport
from computenet.model.task import TaskState
from computenet.node import netmeasure, quality
from computenet.node.metrics import NodeMetrics
from computenet.node.settings import NodeSettings
from computenet.node.tasks import utcnow
from computenet.node.tracing import new_trace_id, trace_id_var
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database

log = logging.getLogger("computenet.node.monitor")
FLUSH_S = 0.25
SEEN_MAX = 100_000  # task ids remembered so a resent report is not counted twice


P = ParamSpec("P")


def _guarded(hook: Callable[P, None]) -> Callable[P, None]:
    """A hook runs after its caller's work is committed: its failure is logged and counted,
    never returned to the caller."""

    @functools.wraps(hook)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            monitor = args[0]
            assert isinstance(monitor, Monitor)
            monitor.error("monitor")
            log.exception("monitoring hook %s failed", hook.__name__)

    return run


class _Seen:
    """A bounded set of recently seen keys."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; True when it was new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > SEEN_MAX:
            self._keys.popitem(last=False)
        return True


class Monitor:
    """Monitoring state of one node."""

    def __init__(self, db: Database, settings: NodeSettings) -> None:
        self.db = db
        self.settings = settings
        self.metrics = NodeMetrics(db)
        self._finished = _Seen()
        self._started = _Seen()
        self._logged = _Seen()
        self._regions: dict[str, str] = {}  # gateway id -> its region
        self._lock = threading.Lock()
        self._traces_due: dict[str, str] = {}
        self._first_logs_due: dict[str, datetime] = {}

    @_guarded
    def task_submitted(self, task_id: str, created: bool) -> None:
        """Count a new task."""
        if created:
            self.metrics.submitted.inc()

    @_guarded
    def task_created(self, task_id: str) -> None:
        """Keep the trace id of the request that creates ``task_id``. The task service calls
        this before it wakes the placer: a task may be placed and leased at once, and its
        lease must carry the trace id."""
        with self._lock:
            self._traces_due[task_id] = trace_id_var.get() or new_trace_id()

    def traces(self, tasks: list[LeasedTask]) -> list[LeasedTask]:
        """The leased tasks with the trace ids they were submitted under (unchanged if the
        lookup fails: the leases are already committed and must reach the gateway)."""
        if not tasks:
            return tasks
        try:
            return self._traces(tasks)
        except Exception:
            self.error("monitor")
            log.exception("trace lookup failed")
            return tasks

    def _traces(self, tasks: list[LeasedTask]) -> list[LeasedTask]:
        with self._lock:
            due = {x.task_id: self._traces_due.get(x.task_id) for x in tasks}
        with self.db.read() as s:
            ids = {
                k: v
                for k, v in s.execute(
                    select(m.TaskTiming.task_id, m.TaskTiming.trace_id).where(
                        m.TaskTiming.task_id.in_([x.task_id for x in tasks])
                    )
                )
            }
        return [
            x.model_copy(update={"trace_id": due[x.task_id] or ids.get(x.task_id)}) for x in tasks
        ]

    @_guarded
    def heartbeat(self, gateway_id: str, msg: Heartbeat, reply: HeartbeatReply) -> None:
        """Count renewals and keep the RTT the gateway measured."""
        self.metrics.heartbeats.inc()
        self.metrics.lease_renewals.inc(len(reply.renewed))
        self.metrics.leases_lost.inc(len(reply.lost))
        if msg.rtt_ms is None:
            return
        self.metrics.gateway_rtt.labels(gateway_id).set(msg.rtt_ms)
        region = self._regions.get(gateway_id) or netmeasure.gateway_region(self.db, gateway_id)
        if region is None:
            return
        self._regions[gateway_id] = region
        netmeasure.record_rtt(self.db, gateway_id, region, self.settings.region, msg.rtt_ms)

    @_guarded
    def report(self, task_id: str, rep: TaskReport) -> None:
        """After a report: count starts and ends, time the queue wait and the first log."""
        with self.db.read() as s:
            row = s.execute(
                select(t.Task.state, t.Task.created_at, t.Task.started_at).where(
                    t.Task.id == task_id
                )
            ).first()
        if row is None:
            return
        state = TaskState(row.state)
        if row.started_at is not None and self._started.add(task_id):
            self.metrics.started.inc()
            self.metrics.queue_wait.observe((row.started_at - row.created_at).total_seconds())
        if state.terminal and self._finished.add(task_id):
            self.metrics.finished.labels(state.value).inc()
        has_log = any(
            (e.stdout and e.stdout.data) or (e.stderr and e.stderr.data) for e in rep.executors
        )
        if has_log and self._logged.add(task_id):
            with self._lock:
                self._first_logs_due[task_id] = utcnow()

    def flush(self) -> int:
        """Write the trace ids and first-log times gathered since the last flush in one
        transaction (one per submission would halve the store's submit rate); return how
        many tasks it touched."""
        with self._lock:
            # Trace ids stay due until written: a lease looked up meanwhile finds them here.
            traces = dict(self._traces_due)
            first_logs, self._first_logs_due = self._first_logs_due, {}
        ids = sorted(traces.keys() | first_logs.keys())
        if not ids:
            return 0
        with self.db.write() as s:
            rows = {
                r.task_id: r
                for r in s.scalars(select(m.TaskTiming).where(m.TaskTiming.task_id.in_(ids)))
            }
            new = [
                {
                    "task_id": tid,
                    "trace_id": traces.get(tid) or new_trace_id(),
                    "first_log_at": first_logs.get(tid),
                }
                for tid in ids
                if tid not in rows
            ]
            if new:
                s.execute(insert(m.TaskTiming), new)
            for tid, row in rows.items():  # written meanwhile by another path: merge
                row.trace_id = traces.get(tid, row.trace_id)
                row.first_log_at = row.first_log_at or first_logs.get(tid)
        with self._lock:
            for tid, trace in traces.items():
                if self._traces_due.get(tid) == trace:
                    del self._traces_due[tid]
        return len(ids)

    def placement_pass(self, took_s: float, placed: int) -> None:
        """Time one scheduling pass and count its placements."""
        self.metrics.placement.observe(took_s)
        self.metrics.placed.inc(placed)

    def error(self, where: str) -> None:
        """Count a failure of background work."""
        self.metrics.errors.labels(where).inc()

    async def flush_loop(self) -> None:
        """Flush every ``FLUSH_S``, and once more when stopped."""
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                try:
                    await asyncio.to_thread(self.flush)
                except Exception:
                    self.error("monitor")
                    log.exception("monitoring flush failed")
        finally:
            with contextlib.suppress(Exception):
                self.flush()

    async def sample_loop(self) -> None:
        """Take a quality sample of every pool every ``quality_sample_s``."""
        while True:
            try:
                await asyncio.to_thread(quality.sample_pools, self.db)
            except Exception:
                self.error("quality_sample")
                log.exception("quality sample failed")
            await asyncio.sleep(self.settings.quality_sample_s)
