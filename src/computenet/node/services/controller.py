"""The service controller: turns each service's desired replicas into replica tasks.

A replica IS a task: it is submitted through the task service (so it is placed by the one
scheduler, forwarded, billed and held against budgets like any task), and scaling down or
deleting cancels it. Each pass: mark ended replicas, autoscale from the metric plane, start
missing replicas (spread over regions the scheduler can offer), cancel extras, and roll old
versions away once the new version's replicas are healthy.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from computenet.billing.ledger import Ledger
from computenet.errors import (
    BudgetExceeded,
    ComputeNetError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from computenet.model.ids import ulid
from computenet.model.service import Access, ReplicaPolicy, ServiceSpec, key_hash
from computenet.model.task import MAX_TIME_LIMIT_S, Placement, TaskSpec, TaskState
from computenet.node.scheduling import SchedService
from computenet.node.services.autoscale import Autoscaler, Load
from computenet.node.services.directory import ServiceDirectory, pool_where
from computenet.node.services.orphans import adopt_orphans
from computenet.node.tasks import TaskService
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_services import Service, ServiceKey, ServiceReplica
from computenet.tasks.clock import Clock

log = logging.getLogger("computenet.services")
KEY_PREFIX = "cnsk_"  # service keys are told apart from node tokens at a glance
MAX_KEYS = 16
SPREAD_OFFERS = 64  # pools looked at when steering a new replica to a fresh region
MAX_STARTS_PER_PASS = 16  # a service asking for many replicas starts them over a few passes
# A replica task runs at most this long (unless the service sets resources.time_limit_s):
# then it ends and its closing charge is booked, and a successor has taken its place. A budget
# holds one segment per replica; the bill shows it as it runs (billing.metering bills each
# elapsed interval of a running replica).
DEFAULT_SEGMENT_S = 24 * 3600
ROTATE_BEFORE_S = 600  # its successor starts this long before a replica's limit...
ROTATE_FRACTION = 0.1  # ...or this fraction of the limit before, for short limits
SPREAD_WAIT_S = 10.0  # how long new replicas wait for an unplaced one, to spread past it
CRASH_LIMIT = 3  # failed replicas of one version in CRASH_WINDOW_S before backing off
CRASH_WINDOW_S = 300.0
CRASH_BACKOFF_S = 10.0
_FAILED = (TaskState.EXECUTOR_ERROR.value, TaskState.SYSTEM_ERROR.value)


class MetricPlane(Protocol):
    """What the controller reads of the routing plane (``rt.metric_plane``)."""

    def healthy(self, task_id: str) -> bool: ...

    def service_load(self, name: str) -> Load: ...


@dataclass(frozen=True)
class Deployed:
    """The outcome of a deploy: ``key`` is a new service key, shown once."""

    name: str
    version: str
    created: bool
    rolling: bool
    key: str | None


def new_key() -> str:
    """A fresh service key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def spread(placement: Placement, offered: dict[str, str], used: set[str]) -> Placement:
    """Placement for one more replica: keep it off regions that already have one while the
    scheduler offers a pool elsewhere (``offered``: pool CPI -> region), so replicas spread
    for availability; with no such pool, the placement as the service wrote it."""
    fresh = set(offered.values()) - used
    if not fresh or not used:
        return placement
    deny = sorted(set(placement.regions_deny) | used)
    return placement.model_copy(update={"regions_deny": deny})


def _may_see(owner: str | None, row: Service) -> bool:
    return owner is None or row.owner == owner


class ServiceController:
    """Deploy, scale, delete and reconcile services."""

    def __init__(
        self,
        db: Database,
        node_code: str,
        tasks: TaskService,
        ledger: Ledger,
        directory: ServiceDirectory,
        clock: Clock,
        sched: SchedService,
        plane: Callable[[], MetricPlane | None],
        segment_s: int = DEFAULT_SEGMENT_S,
    ) -> None:
        """``sched`` offers the pools a replica could go to (for spreading); ``plane``
        returns the metric plane once the routing layer is up; ``segment_s`` is how long a
        replica task runs (unless the service sets ``time_limit_s``) before a fresh one
        takes its place, so that long-lived services are billed segment by segment."""
        self.db = db
        self.node_code = node_code
        self.tasks = tasks
        self.ledger = ledger
        self.directory = directory
        self.clock = clock
        self.sched = sched
        self.plane = plane
        self.segment_s = min(segment_s, MAX_TIME_LIMIT_S)
        self.scaler = Autoscaler()
        self.notes: dict[str, str] = {}  # the last thing that stopped a pass, per service
        self._lock = threading.Lock()
        # A replica task may exist that no service_replicas row lists: the node died (or the
        # store failed) between submitting it and recording it. The first pass, and the next
        # pass after a failed record, look for such orphans (see adopt_orphans).
        self._orphans_possible = True

    # ---- the API's operations -------------------------------------------------------

    def deploy(self, spec: ServiceSpec, owner: str, tenant: str) -> Deployed:
        """Create a service, or roll an existing one to a new version."""
        now = self.clock()
        key: str | None = None
        with self.db.write() as s:
            row = s.get(Service, spec.name, with_for_update=True)
            if row is None:
                self._check_budget(s, tenant, now)
                desired = spec.replicas.min
                s.add(
                    Service(
                        name=spec.name,
                        home_node=self.node_code,
                        owner=owner,
                        tenant=tenant,
                        spec=spec.model_dump(mode="json"),
                        version=spec.version,
                        min_replicas=spec.replicas.min,
                        max_replicas=spec.replicas.max,
                        desired=desired,
                        state="active",
                        created_at=now,
                        updated_at=now,
                    )
                )
                if spec.access is Access.KEY:
                    key = self._add_key(s, spec.name, now)[1]
                created, rolling = True, False
            else:
                if row.owner != owner:
                    raise Conflict(f"service name {spec.name!r} is taken on this node")
                if row.state != "active":
                    raise Conflict(f"service {spec.name!r} is being deleted; deploy it again later")
                same = ServiceSpec.model_validate(row.spec) == spec
                if row.version == spec.version and not same:
                    raise Conflict(
                        f"version {spec.version!r} of {spec.name!r} is deployed with another "
                        "spec: give the new one a new version to roll to it"
                    )
                rolling = not same
                if rolling:
                    self._check_budget(s, row.tenant, now)
                    row.spec, row.version = spec.model_dump(mode="json"), spec.version
                    row.min_replicas, row.max_replicas = spec.replicas.min, spec.replicas.max
                    row.desired = min(max(row.desired, row.min_replicas), row.max_replicas)
                    row.updated_at = now
                created = False
        self.reconcile(spec.name)
        return Deployed(spec.name, spec.version, created, rolling, key)

    def scale(self, name: str, owner: str | None, lo: int | None, hi: int | None) -> Service:
        """Set a service's replica bounds (``owner`` None: an operator)."""
        now = self.clock()
        with self.db.write() as s:
            row = self._get(s, name, owner, lock=True)
            new_lo = row.min_replicas if lo is None else lo
            new_hi = row.max_replicas if hi is None else hi
            spec = ServiceSpec.model_validate(row.spec)
            # The policy's own checks (min <= max, zero only with scale_to_zero) apply.
            try:
                ReplicaPolicy.model_validate(
                    {**spec.replicas.model_dump(), "min": new_lo, "max": new_hi}
                )
            except ValidationError as exc:
                msgs = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
                raise InvalidInput("; ".join(msgs)) from None
            if new_lo > row.desired:
                self._check_budget(s, row.tenant, now)
            row.min_replicas, row.max_replicas = new_lo, new_hi
            row.desired = min(max(row.desired, new_lo), new_hi)
            row.updated_at = now
        self.reconcile(name)
        return self.get(name, owner)

    def delete(self, name: str, owner: str | None) -> None:
        """Cancel every replica; the service goes once none is left."""
        with self.db.write() as s:
            row = self._get(s, name, owner, lock=True)
            row.state, row.desired, row.updated_at = "deleting", 0, self.clock()
        self.reconcile(name)

    def get(self, name: str, owner: str | None) -> Service:
        """A service row the caller may see."""
        with self.db.read() as s:
            row = self._get(s, name, owner)
            s.expunge(row)
            return row

    def visible(self, owner: str | None) -> list[Service]:
        """Services the caller may see, by name."""
        with self.db.read() as s:
            q = select(Service).order_by(Service.name)
            if owner is not None:
                q = q.where(Service.owner == owner)
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows

    def replica_tasks(self, name: str, owner: str | None) -> list[ServiceReplica]:
        """Every replica task made for a service, newest first."""
        with self.db.read() as s:
            self._get(s, name, owner)
            rows = list(
                s.scalars(
                    select(ServiceReplica)
                    .where(ServiceReplica.service == name)
                    .order_by(ServiceReplica.created_at.desc())
                )
            )
            s.expunge_all()
            return rows

    def create_key(self, name: str, owner: str | None) -> tuple[str, str]:
        """A new key for the service: ``(id, key)``; the key is shown only now."""
        with self.db.write() as s:
            self._get(s, name, owner, lock=True)
            out = self._add_key(s, name, self.clock())
        self.directory.invalidate()
        return out

    def keys(self, name: str, owner: str | None) -> list[ServiceKey]:
        """The service's keys (ids and dates; hashes stay here)."""
        with self.db.read() as s:
            self._get(s, name, owner)
            rows = list(
                s.scalars(
                    select(ServiceKey)
                    .where(ServiceKey.service == name)
                    .order_by(ServiceKey.created_at)
                )
            )
            s.expunge_all()
            return rows

    def revoke_key(self, name: str, owner: str | None, key_id: str) -> None:
        """Revoke one key: the router refuses it from the next directory read."""
        with self.db.write() as s:
            self._get(s, name, owner, lock=True)
            row = s.get(ServiceKey, key_id)
            if row is None or row.service != name:
                raise NotFound(f"service {name!r} has no key {key_id!r}")
            s.delete(row)
        self.directory.invalidate()

    # ---- reconciling ----------------------------------------------------------------

    def reconcile_all(self) -> int:
        """One pass over every service; returns how many replica tasks it started or
        cancelled (orphans adopted or cancelled included)."""
        with self.db.read() as s:
            names = list(s.scalars(select(Service.name).order_by(Service.name)))
        if not names:
            # No service left to reconcile, but orphans of a deleted one may still run.
            with self._lock:
                return self._adopt_orphans()
        return sum(self.reconcile(name) for name in names)

    def _adopt_orphans(self) -> int:
        """Replica tasks submitted but never recorded (a crash between the two steps of
        ``_start``): adopted when their service lives, so this pass counts them (and cancels
        surplus ones); cancelled when it is gone. Runs (under the lock) on the first pass and
        after a failed record only. Returns how many it adopted or cancelled."""
        if not self._orphans_possible:
            return 0
        with self.db.write() as s:
            adopted, gone = adopt_orphans(s, self.node_code)
        changed = adopted
        for tid in gone:
            try:
                self.tasks.cancel(tid)
                changed += 1
            except (Conflict, NotFound):
                pass  # it ended on its own meanwhile
        self._orphans_possible = False
        if changed:
            log.warning("services: %d untracked replica task(s) adopted or cancelled", changed)
        return changed

    def reconcile(self, name: str) -> int:
        """Bring one service's replica tasks to what it wants now."""
        # One pass at a time here: an API call's pass and the loop's must not both start
        # the one missing replica.
        with self._lock:
            self.notes.pop(name, None)
            adopted = self._adopt_orphans()
            try:
                changed = adopted + self._reconcile(name)
            except ComputeNetError as exc:
                # Budget spent, a crash loop...: shown on the service's status, tried again.
                self.notes[name] = exc.message
                log.warning("service %s: %s", name, exc.message)
                changed = adopted
            self.directory.invalidate()
            return changed

    def _reconcile(self, name: str) -> int:
        now = self.clock()
        with self.db.write() as s:
            row = s.get(Service, name, with_for_update=True)
            if row is None:
                return 0
            live = self._live(s, name)
            if row.state == "deleting" and not live:
                s.execute(delete(ServiceKey).where(ServiceKey.service == name))
                s.delete(row)
                self.scaler.forget(name)
                return 0
            # A replica near its time limit is replaced like an old version: its successor
            # starts, and it goes once the successor is healthy.
            current = [
                (r, task)
                for r, task in live
                if r.version == row.version and not self._expiring(task, now)
            ]
            if row.state == "active":
                row.desired = self._autoscale(s, row, len(current), now)
            spec = ServiceSpec.model_validate(row.spec)
            tenant, owner, desired = row.tenant, row.owner, row.desired
            used_regions = self._regions(s, [task for _r, task in current])
            waiting = [r.created_at for r, task in current if task.pool_cpi is None]
            unplaced_since = max(waiting) if waiting else None
        cancel = self._to_cancel(live, current, desired)
        changed = 0
        for tid in cancel:
            try:
                self.tasks.cancel(tid)
                changed += 1
            except (Conflict, NotFound):
                pass  # it ended on its own meanwhile
        taken = {r.replica for r, _task in current}
        missing = min(max(0, desired - len(current)), MAX_STARTS_PER_PASS)
        if missing == 0:
            return changed
        wait_s = self._crash_backoff_s(name, spec.version, now)
        if wait_s > 0:
            raise Unavailable(
                f"replicas of version {spec.version} keep failing (see `computenet service "
                f"logs {name}`): the next starts in {wait_s:.0f} s"
            )
        keys = self._key_hashes(name)
        offered = self._offered(spec.replica_task(0, keys, self.node_code, self.segment_s))
        spreading = len(set(offered.values())) > 1
        young = (
            unplaced_since is not None and (now - unplaced_since).total_seconds() < SPREAD_WAIT_S
        )
        if spreading and young:
            # Start the next one once this one has a pool: it can then be kept off that
            # pool's region. One that cannot be placed for a while stops holding them back.
            return changed
        for _ in range(1 if spreading else missing):
            index = next(i for i in range(len(taken) + 1) if i not in taken)
            taken.add(index)
            task = spec.replica_task(index, keys, self.node_code, self.segment_s)
            task.placement = spread(task.placement, offered, used_regions)
            self._start(task, spec, index, owner, tenant, now)
            changed += 1
        return changed

    def _live(self, s: Session, name: str) -> list[tuple[ServiceReplica, t.Task]]:
        """The service's replica tasks not yet ended (marking ended ones as such)."""
        out = []
        rows = s.scalars(
            select(ServiceReplica).where(ServiceReplica.service == name, ServiceReplica.live == 1)
        )
        for rep in rows:
            task = s.get(t.Task, rep.task_id)
            if task is None or TaskState(task.state).terminal:
                rep.live = 0  # ended: the next step starts a replacement if one is wanted
                continue
            out.append((rep, task))
        return out

    def _crash_backoff_s(self, name: str, version: str, now: datetime) -> float:
        """How long to wait before starting another replica of a version whose replicas
        keep failing: none for the first ``CRASH_LIMIT`` failures in ``CRASH_WINDOW_S``, then
        doubling from ``CRASH_BACKOFF_S`` (a server that cannot start must not turn into a
        task a second)."""
        since = now - timedelta(seconds=CRASH_WINDOW_S)
        with self.db.read() as s:
            ended = list(
                s.scalars(
                    select(t.Task.ended_at)
                    .join(ServiceReplica, ServiceReplica.task_id == t.Task.id)
                    .where(
                        ServiceReplica.service == name,
                        ServiceReplica.version == version,
                        t.Task.state.in_(_FAILED),
                        t.Task.ended_at >= since,
                    )
                )
            )
        failures = [at for at in ended if at is not None]
        if len(failures) < CRASH_LIMIT:
            return 0.0
        pause_s = min(CRASH_WINDOW_S, CRASH_BACKOFF_S * 2 ** (len(failures) - CRASH_LIMIT))
        return float(max(0.0, pause_s - (now - max(failures)).total_seconds()))

    @staticmethod
    def _expiring(task: t.Task, now: datetime) -> bool:
        """Whether a running replica is within ``ROTATE_BEFORE`` of its time limit."""
        limit = (task.spec.get("resources") or {}).get("time_limit_s")
        if task.state != TaskState.RUNNING.value or task.started_at is None or not limit:
            return False
        lead_s = min(ROTATE_BEFORE_S, limit * ROTATE_FRACTION)
        return bool((now - task.started_at).total_seconds() >= limit - lead_s)

    def _regions(self, s: Session, tasks: list[t.Task]) -> set[str]:
        out = set()
        for task in tasks:
            where = pool_where(s, task.pool_cpi, self.node_code) if task.pool_cpi else None
            if where is not None:
                out.add(where.region)
        return out

    def _to_cancel(
        self,
        live: list[tuple[ServiceReplica, t.Task]],
        current: list[tuple[ServiceReplica, t.Task]],
        desired: int,
    ) -> list[str]:
        """Extras of the current version (highest index, not yet running first), and old
        versions' replicas once enough new ones are healthy to take their place."""
        stopping = {task.id for _r, task in live if task.state == TaskState.CANCELING.value}
        waiting_first = sorted(
            current,
            key=lambda rt: (rt[1].state == TaskState.RUNNING.value, -rt[0].replica),
        )
        extra = [task.id for _r, task in waiting_first[: max(0, len(current) - desired)]]
        old = [(r, task) for r, task in live if (r, task) not in current]
        healthy = sum(1 for _r, task in current if self._healthy(task))
        keep_old = max(0, desired - healthy)
        old_waiting_first = sorted(
            old, key=lambda rt: (rt[1].state == TaskState.RUNNING.value, rt[0].created_at)
        )
        retire = old_waiting_first[: max(0, len(old) - keep_old)]
        return [tid for tid in extra + [task.id for _r, task in retire] if tid not in stopping]

    def _healthy(self, task: t.Task) -> bool:
        """Running, and passing health checks where the metric plane is up."""
        if task.state != TaskState.RUNNING.value:
            return False
        plane = self.plane()
        return plane is None or plane.healthy(task.id)

    def _autoscale(self, s: Session, row: Service, current: int, now: datetime) -> int:
        """The autoscaler's size for the service (its bounds when no metric plane runs)."""
        spec = ServiceSpec.model_validate(row.spec)
        policy = spec.replicas.model_copy(update={"min": row.min_replicas, "max": row.max_replicas})
        plane = self.plane()
        at_s = now.timestamp()
        if plane is None:
            return min(max(row.desired, policy.min), policy.max)
        load = plane.service_load(row.name)
        self.scaler.observe(row.name, load, at_s)
        if self._spent(s, row.tenant, now):
            # No more replicas than now: the autoscaler may still scale down.
            policy = policy.model_copy(
                update={"max": max(policy.min, min(row.desired, policy.max))}
            )
            if load.in_flight > row.desired * policy.target_inflight:
                self.notes[row.name] = f"not scaling up: tenant {row.tenant!r} has spent its budget"
        return self.scaler.step(row.name, policy, row.desired, at_s)

    def _start(
        self, task: TaskSpec, spec: ServiceSpec, index: int, owner: str, tenant: str, now: datetime
    ) -> None:
        """Submit one replica task (through the task service: held against the budget,
        placed by the scheduler) and remember it. Two transactions: should the second fail,
        or the node die between them, ``adopt_orphans`` records the task later."""
        tid, _created = self.tasks.submit(task, owner, None, tenant)
        try:
            with self.db.write() as s:
                s.add(
                    ServiceReplica(
                        task_id=tid,
                        service=spec.name,
                        version=spec.version,
                        replica=index,
                        live=1,
                        created_at=now,
                    )
                )
        except BaseException:
            self._orphans_possible = True  # the next pass adopts it
            raise

    def _key_hashes(self, name: str) -> list[str]:
        with self.db.read() as s:
            return sorted(s.scalars(select(ServiceKey.key_hash).where(ServiceKey.service == name)))

    # ---- helpers --------------------------------------------------------------------

    def _offered(self, task: TaskSpec) -> dict[str, str]:
        """The pools the scheduler would consider for ``task`` now: CPI -> region."""
        offers = self.sched.offers(task, None, SPREAD_OFFERS)
        out = {}
        with self.db.read() as s:
            for offer in offers:
                where = pool_where(s, offer.pool, self.node_code)
                if where is not None:
                    out[offer.pool] = where.region
        return out

    def _get(self, s: Session, name: str, owner: str | None, lock: bool = False) -> Service:
        row = s.get(Service, name, with_for_update=lock)
        if row is None or not _may_see(owner, row):
            raise NotFound(f"no service {name!r}")
        return row

    def _add_key(self, s: Session, name: str, now: datetime) -> tuple[str, str]:
        count = len(list(s.scalars(select(ServiceKey.id).where(ServiceKey.service == name))))
        if count >= MAX_KEYS:
            raise Forbidden(f"service {name!r} has {MAX_KEYS} keys: revoke one first")
        key, kid = new_key(), ulid()
        s.add(ServiceKey(id=kid, service=name, key_hash=key_hash(key), created_at=now))
        return kid, key

    def _spent(self, s: Session, tenant: str, now: datetime) -> bool:
        if not self.ledger.has_budget(s, tenant):
            return False
        status = self.ledger.status_in(s, tenant, now)
        return status is not None and status.left <= 0

    def _check_budget(self, s: Session, tenant: str, now: datetime) -> None:
        if self._spent(s, tenant, now):
            raise BudgetExceeded(
                f"budget exceeded: tenant {tenant!r} has no budget left this month for "
                "service replicas"
            )
