"""Dispatch: the node side of the gateway protocol.

Leases hand tasks, placed by :mod:`computenet.node.placing`, to gateways until an expiry
that heartbeats renew; an expired lease puts the task back in the queue with its attempt
count. Reports bring state, logs and usage (charged in the same transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from computenet.billing.ledger import Ledger
from computenet.billing.metering import measure_attempt
from computenet.errors import Conflict, InvalidInput, NotFound
from computenet.model.catalog import load_catalog
from computenet.model.cpi import allocate_pool
from computenet.model.ids import ulid
from computenet.model.pool import PoolHealth, PoolSpec
from computenet.model.protocol import (
    REPORTABLE_STATES,
    DeclarePools,
    Heartbeat,
    HeartbeatReply,
    LeasedTask,
    LogChunk,
    ReportReply,
    TaskReport,
    UsageReport,
    check_protocol,
)
from computenet.model.task import TaskSpec, TaskState
from computenet.node.outputs import record_outputs
from computenet.node.secrets import SecretStore, mask
from computenet.node.settings import NodeSettings
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.tasks.clock import Clock, utcnow
from computenet.tasks.dispatching import (
    Held,
    Placed,
    expiries,
    lease_lost_outcome,
    lease_order,
)
from computenet.tasks.health import Beat, heard, silence_cutoff, went_silent
from computenet.tasks.lifecycle import HANDED_OUT_STATES, Event, Phase, phase_of, reported
from computenet.tasks.transitions import current_phase, guard, log_line, move, move_by_id

LOG_TAIL_CHARS = 1024 * 1024


def check_measured(spec: PoolSpec) -> None:
    """Refuse a measured FP16 figure well above the card's published peak: a gateway must not
    inflate the PFLOPS-hours its pool bills just by declaring a number."""
    if spec.measured is None or spec.measured.fp16_tflops is None or spec.accelerator is None:
        return
    model = spec.accelerator.model
    catalog = load_catalog()
    peak = catalog.get(model).fp16_dense_tflops if model in catalog else None
    if peak is not None and spec.measured.fp16_tflops > peak * Decimal("1.1"):
        raise InvalidInput(
            f"pool {spec.label}: measured {spec.measured.fp16_tflops} FP16 TFLOPS is above "
            f"the {model} peak of {peak}"
        )


def _append(stored: str, total: int, chunk: LogChunk) -> tuple[str, int]:
    """Append a chunk at its offset, skipping what was already received; keep the tail."""
    end = chunk.offset + len(chunk.data)
    if end <= total:
        return stored, total  # a resend of text we already have
    new = chunk.data[max(0, total - chunk.offset) :]
    if chunk.offset > total:
        new = f"\n[... {chunk.offset - total} characters lost ...]\n" + new
    text = stored + new
    return text[-LOG_TAIL_CHARS:], end


class Dispatcher:
    """Gateway-facing operations: pools, heartbeats, leases, reports, expiry."""

    def __init__(
        self,
        db: Database,
        settings: NodeSettings,
        on_pools: Callable[[], None],
        ledger: Ledger | None = None,
        clock: Clock = utcnow,
    ):
        self.db = db
        self.clock = clock
        self.settings = settings
        # Pools came, came back or went silent: the scheduler looks again. (A task's own
        # changes wake those who wait on them when their transaction commits.)
        self._on_pools = on_pools
        self.ledger = ledger or Ledger(db)
        self.secrets: SecretStore | None = None  # the runtime sets it

    # ---- gateways and pools -------------------------------------------------------

    def register_gateway(self, provider_prefix: str, name: str) -> str:
        """Record a new gateway for an enrolled provider; return its id."""
        gid = ulid()
        with self.db.write() as s:
            if s.get(t.Provider, provider_prefix) is None:
                raise NotFound(f"provider {provider_prefix} is not enrolled here")
            s.add(
                t.Gateway(
                    id=gid, provider_prefix=provider_prefix, name=name, created_at=self.clock()
                )
            )
        return gid

    def declare_pools(self, gateway_id: str, msg: DeclarePools) -> dict[str, str]:
        """Create or update the gateway's pools inside its provider prefix; return the CPIs."""
        check_protocol(msg.protocol, f"gateway {gateway_id}")
        now = self.clock()
        cpis: dict[str, str] = {}
        with self.db.write() as s:
            gw = self._gateway(s, gateway_id)
            for spec in msg.pools:
                check_measured(spec)
                cpi = str(allocate_pool(gw.provider_prefix, spec.label))
                row = s.get(t.Pool, cpi)
                data = spec.model_dump(mode="json")
                if row is None:
                    s.add(
                        t.Pool(
                            cpi=cpi,
                            provider_prefix=gw.provider_prefix,
                            gateway_id=gw.id,
                            spec=data,
                            health=PoolHealth.HEALTHY.value,
                            running_tasks=0,
                            last_heartbeat_at=now,
                            updated_at=now,
                            version=1,
                        )
                    )
                else:
                    # Same provider prefix by construction: a restarted or replacement
                    # gateway of the provider takes the pool over.
                    row.gateway_id = gw.id
                    if row.spec != data:
                        row.spec = data
                        row.version += 1
                    row.health = PoolHealth.HEALTHY.value
                    row.last_heartbeat_at = now
                    row.updated_at = now
                cpis[spec.label] = cpi
            gw.last_seen_at = now
        self._on_pools()
        return cpis

    @staticmethod
    def _gateway(s: Session, gateway_id: str) -> t.Gateway:
        gw = s.get(t.Gateway, gateway_id)
        if gw is None:
            raise NotFound(f"gateway {gateway_id} is not registered")
        return gw

    def heartbeat(self, gateway_id: str, msg: Heartbeat) -> HeartbeatReply:
        """Mark the gateway's pools alive, renew its leases, and say which tasks to cancel."""
        now = self.clock()
        expires = now + timedelta(seconds=self.settings.lease_ttl_s)
        live = {p.label: p for p in msg.pools}
        renewed: list[str] = []
        cancel: list[str] = []
        with self.db.write() as s:
            gw = self._gateway(s, gateway_id)
            gw.last_seen_at = now
            became_healthy = False
            for pool in s.scalars(select(t.Pool).where(t.Pool.gateway_id == gateway_id)):
                label = pool.cpi.rsplit("/", 1)[1]
                state = live.get(label)
                if state:
                    pool.running_tasks = state.running_tasks
                # The rule the simulator applies too: not vouched for, unhealthy.
                new_health = heard(state.healthy if state else None)
                healthy = new_health is PoolHealth.HEALTHY
                became_healthy |= pool.health != new_health.value and healthy
                pool.health = new_health.value
                pool.last_heartbeat_at = now
            finished: set[str] = set()
            if msg.leases:
                rows = s.scalars(
                    select(t.Task)
                    .where(t.Task.lease_id.in_(msg.leases))
                    .order_by(t.Task.id)
                    .with_for_update()
                )
                for row in rows:
                    assert row.lease_id is not None
                    if row.lease_gateway_id != gateway_id:
                        continue
                    if TaskState(row.state).terminal:
                        finished.add(row.lease_id)  # its final report crossed this heartbeat
                        continue
                    row.lease_expires_at = expires
                    renewed.append(row.lease_id)
                    if row.cancel_requested:
                        cancel.append(row.lease_id)
        if became_healthy:
            self._on_pools()
        lost = sorted(set(msg.leases) - set(renewed) - finished)
        return HeartbeatReply(
            renewed=renewed, lost=lost, cancel=cancel, lease_ttl_s=self.settings.lease_ttl_s
        )

    # ---- leases -------------------------------------------------------------------

    def lease(self, gateway_id: str, max_tasks: int) -> list[LeasedTask]:
        """Hand up to ``max_tasks`` tasks placed on this gateway's pools to it."""
        now = self.clock()
        expires = now + timedelta(seconds=self.settings.lease_ttl_s)
        out: list[LeasedTask] = []
        # SQL narrows to the candidates (placed here, unleased); the pure lease_order picks
        # and orders them, as the simulator does. Placed tasks hold capacity, so they are few.
        cpis = select(t.Pool.cpi).where(t.Pool.gateway_id == gateway_id)
        unleased = (
            t.Task.state == TaskState.QUEUED.value,
            t.Task.pool_cpi.in_(cpis),
            t.Task.lease_id.is_(None),
        )
        # A placement wakes every gateway's long-poll: look without the write lock first, so
        # a gateway with nothing placed on it does not queue behind the others for it.
        with self.db.read() as s:
            if s.execute(select(t.Task.id).where(*unleased).limit(1)).first() is None:
                return out
        with self.db.write() as s:
            candidates = s.execute(
                select(t.Task.id, t.Task.pool_cpi, t.Task.priority, t.Task.seq).where(*unleased)
            )
            ids = lease_order(
                (Placed(i, Phase.PLACED, pool, prio, seq) for i, pool, prio, seq in candidates),
                set(s.scalars(cpis)),
                max_tasks,
            )
            q = select(t.Task).where(t.Task.id.in_(ids), *unleased)
            if not self.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            rows = {row.id: row for row in s.scalars(q)}
            for row in (rows[i] for i in ids if i in rows):
                assert row.pool_cpi is not None
                secrets = self._secret_env(s, row)
                if secrets is None:
                    continue  # it named a secret that is gone: failed, not leased
                attempt = row.attempt + 1
                move(
                    s,
                    row,
                    Event.LEASED,
                    now,
                    f"leased to gateway {gateway_id} on {row.pool_cpi} (attempt {attempt})",
                    lease_id=ulid(),
                    lease_gateway_id=gateway_id,
                    lease_expires_at=expires,
                    attempt=attempt,
                )
                assert row.lease_id is not None  # set by the move
                out.append(
                    LeasedTask(
                        task_id=row.id,
                        lease_id=row.lease_id,
                        attempt=row.attempt,
                        pool_cpi=row.pool_cpi,
                        spec=TaskSpec.model_validate(row.spec),
                        lease_expires_at=expires,
                        secrets=secrets,
                    )
                )
        return out

    def _secret_values(self, s: Session, row: t.Task) -> dict[str, str]:
        """Secret name -> value for the secrets ``row`` names."""
        names = (row.spec.get("secrets") or {}).values()
        if not names or self.secrets is None:
            return {}
        return self.secrets.values(s, row.tenant or row.owner, names)

    def _secret_env(self, s: Session, row: t.Task) -> dict[str, str] | None:
        """The task's secret environment for its gateway; None (and the task failed) when
        one of the secrets it names no longer exists."""
        wanted: dict[str, str] = row.spec.get("secrets") or {}
        values = self._secret_values(s, row)
        if missing := sorted(set(wanted.values()) - set(values)):
            now = self.clock()
            move(
                s,
                row,
                Event.SETUP_FAILED,
                now,
                f"secret {', '.join(missing)} no longer exists",
                ended_at=now,
                pool_cpi=None,
            )
            return None
        return {env: values[name] for env, name in wanted.items()}

    def report(self, gateway_id: str, tid: str, rep: TaskReport) -> ReportReply:
        """Apply a gateway's report on a leased task. Resending the same report is harmless."""
        now = self.clock()
        with self.db.write() as s:
            row = s.get(t.Task, tid, with_for_update=True)
            if row is None:
                raise NotFound(f"no task {tid!r}")
            if row.lease_id != rep.lease_id or row.lease_gateway_id != gateway_id:
                raise Conflict(f"lease {rep.lease_id} on task {tid} is no longer held")
            state = TaskState(row.state)
            if state.terminal:
                return ReportReply(cancel=False)  # a resend after we already finished it
            if rep.state not in REPORTABLE_STATES:
                raise InvalidInput(
                    f"a gateway may report {sorted(s.value for s in REPORTABLE_STATES)}, "
                    f"not {rep.state.value}"
                )
            self._apply_logs(s, row, rep, now)
            for line in rep.system_log:
                log_line(s, tid, row.attempt, row.state, line, now)
            row.lease_expires_at = now + timedelta(seconds=self.settings.lease_ttl_s)
            new = rep.state
            if new.terminal:
                starts = [e.start_time for e in rep.executors if e.start_time is not None]
                move(
                    s,
                    row,
                    reported(new),
                    now,
                    f"{new.value.lower()} on {row.pool_cpi}",
                    started_at=row.started_at or (min(starts) if starts else now),
                    ended_at=now,
                    lease_expires_at=None,
                )
                if rep.usage is not None:
                    self._record_usage(s, row, rep.usage, now)
                record_outputs(s, row.id, row.attempt, rep.outputs)
            elif new is TaskState.RUNNING and state is TaskState.INITIALIZING:
                move(
                    s,
                    row,
                    reported(new),
                    now,
                    f"running on {row.pool_cpi}",
                    started_at=row.started_at or now,
                )
            cancel = row.cancel_requested
        return ReportReply(cancel=cancel)

    def _apply_logs(self, s: Session, row: t.Task, rep: TaskReport, now: datetime) -> None:
        secret_values: list[str] | None = None  # read once, when there is output to mask
        executors = len(row.spec.get("executors", []))
        for ex in rep.executors:
            if ex.index >= executors:
                raise InvalidInput(f"task {row.id} has {executors} executors, not {ex.index + 1}")
            log = s.get(t.ExecutorLog, (row.id, row.attempt, ex.index))
            if log is None:
                log = t.ExecutorLog(
                    task_id=row.id,
                    attempt=row.attempt,
                    index=ex.index,
                    stdout="",
                    stderr="",
                    stdout_chars=0,
                    stderr_chars=0,
                )
                s.add(log)
            log.start_time = ex.start_time or log.start_time
            log.end_time = ex.end_time or log.end_time
            if ex.exit_code is not None:
                log.exit_code = ex.exit_code
            if ex.stdout is not None:
                log.stdout, log.stdout_chars = _append(log.stdout, log.stdout_chars, ex.stdout)
            if ex.stderr is not None:
                log.stderr, log.stderr_chars = _append(log.stderr, log.stderr_chars, ex.stderr)
            if secret_values is None:
                secret_values = list(self._secret_values(s, row).values())
            if secret_values:
                # Over the whole kept text, so a value split between two reports is caught.
                log.stdout = mask(log.stdout, secret_values)
                log.stderr = mask(log.stderr, secret_values)

    def preempted(self, s: Session, row: t.Task, now: datetime, why: str) -> None:
        """A leased task preempted by the scheduler: bill what ran, then re-queue it.

        Its gateway can no longer report (the lease is gone), so the node measures the
        attempt itself, from its RUNNING event to now.
        """
        ran_since = s.scalar(
            select(func.max(t.TaskEvent.at)).where(
                t.TaskEvent.task_id == row.id,
                t.TaskEvent.attempt == row.attempt,
                t.TaskEvent.state == TaskState.RUNNING.value,
            )
        )
        if ran_since is not None and row.pool_cpi is not None:
            wall_s = Decimal(str(max(0.0, (now - ran_since).total_seconds())))
            usage = UsageReport(
                wall_s=wall_s,
                cpu_cores=row.cpu_cores,
                memory_mib=row.memory_mib,
                cards=row.accelerators,
            )
            self._record_usage(s, row, usage, now)
        self._lease_lost(s, row, now, why, Event.PREEMPTED)

    def _record_usage(self, s: Session, row: t.Task, u: UsageReport, now: datetime) -> None:
        assert row.pool_cpi is not None
        since = row.started_at or row.created_at
        wall_cap = Decimal(str((now - since).total_seconds())) + 1
        exists = s.scalars(
            select(t.UsageRecord.id).where(
                t.UsageRecord.task_id == row.id, t.UsageRecord.attempt == row.attempt
            )
        ).first()
        if exists is not None:
            return
        # The gateway measures time; what was held comes from the task and its pool.
        m = measure_attempt(s, row, min(u.wall_s, max(Decimal(0), wall_cap)))
        usage = t.UsageRecord(
            task_id=row.id,
            attempt=row.attempt,
            pool_cpi=row.pool_cpi,
            accelerator_model=m.accelerator_model,
            cards=m.cards,
            wall_s=m.wall_s,
            card_hours=m.card_hours,
            cpu_core_hours=m.cpu_core_hours,
            memory_gib_hours=m.memory_gib_hours,
            pflops_hours_fp16=m.pflops_hours_fp16,
            created_at=now,
        )
        s.add(usage)
        self.ledger.charge(s, row, usage, now)  # same transaction: no usage without its charge

    # ---- housekeeping -------------------------------------------------------------

    def expire(self) -> int:
        """Re-queue tasks whose lease ran out, and mark silent pools unhealthy."""
        now = self.clock()
        changed = 0
        with self.db.write() as s:
            # SQL narrows to held leases; the pure ``expiries`` decides which ran out and
            # what becomes of each, as the simulator decides it.
            held = s.execute(
                select(t.Task.id, t.Task.state, t.Task.pool_cpi, t.Task.attempt)
                .add_columns(t.Task.lease_expires_at)
                .where(t.Task.state.in_(HANDED_OUT_STATES), t.Task.lease_expires_at.is_not(None))
            )
            ran_out = expiries(
                (
                    Held(i, phase_of(state, pool, False), attempt, at)
                    for i, state, pool, attempt, at in held
                ),
                now,
                self.settings.max_attempts,
            )
            for gone in ran_out:
                row = s.get(t.Task, gone.task_id, with_for_update=True)
                assert row is not None
                self._lease_lost(s, row, now)
                changed += 1
            # SQL narrows to pools heard from before the cutoff, and to tasks placed on
            # them; the pure ``went_silent`` decides which turn unhealthy and what they
            # give back, as the simulator decides it.
            timeout_s = self.settings.heartbeat_timeout_s
            beats = s.execute(
                select(t.Pool.cpi, t.Pool.health, t.Pool.last_heartbeat_at).where(
                    t.Pool.health == PoolHealth.HEALTHY.value,
                    t.Pool.last_heartbeat_at < silence_cutoff(now, timeout_s),
                )
            ).all()
            candidates = (
                s.execute(
                    select(t.Task.id, t.Task.pool_cpi, t.Task.priority, t.Task.seq).where(
                        t.Task.pool_cpi.in_([cpi for cpi, _, _ in beats]), guard(Phase.PLACED)
                    )
                ).all()
                if beats
                else []
            )
            decided = went_silent(
                (Beat(cpi, PoolHealth(health), at) for cpi, health, at in beats),
                (Placed(i, Phase.PLACED, pool, prio, seq) for i, pool, prio, seq in candidates),
                now,
                timeout_s,
            )
            for cpi in decided.unhealthy:
                pool = s.get(t.Pool, cpi)
                assert pool is not None
                pool.health = PoolHealth.UNHEALTHY.value
                pool.updated_at = now
                changed += 1
            why = "placed pool stopped heartbeating"
            for tid in decided.unplaced:
                move_by_id(
                    s, tid, Phase.PLACED, Event.UNPLACED, now, why, pool_cpi=None, reason=why
                )
        if changed:
            self._on_pools()
        return changed

    def release(self, gateway_id: str, tid: str, lease_id: str, why: str) -> TaskState:
        """A gateway hands a leased task back; it is re-queued to be placed elsewhere."""
        now = self.clock()
        with self.db.write() as s:
            row = s.get(t.Task, tid, with_for_update=True)
            if row is None:
                raise NotFound(f"no task {tid!r}")
            if row.lease_id != lease_id or row.lease_gateway_id != gateway_id:
                raise Conflict(f"lease {lease_id} on task {tid} is no longer held")
            if not TaskState(row.state).terminal:
                self._lease_lost(s, row, now, f"handed back by its gateway ({why})")
            state = TaskState(row.state)
        return state

    def _lease_lost(
        self,
        s: Session,
        row: t.Task,
        now: datetime,
        why: str = "expired (gateway lost?)",
        event: Event = Event.LEASE_LOST,
    ) -> None:
        lost = f"lease on {row.pool_cpi} {why}"
        phase = current_phase(s, row)
        event, target = lease_lost_outcome(phase, row.attempt, self.settings.max_attempts, event)
        unleased = {"lease_id": None, "lease_gateway_id": None, "lease_expires_at": None}
        if target is Phase.CANCELED:
            move(s, row, event, now, f"{lost} while canceling", ended_at=now, **unleased)
        elif target is Phase.SYSTEM_ERROR:
            msg = f"{lost}; gave up after {row.attempt} attempts"
            move(s, row, event, now, msg, ended_at=now, **unleased)
        else:
            msg = f"{lost}; re-queued after attempt {row.attempt}"
            move(s, row, event, now, msg, pool_cpi=None, reason=f"re-queued: {lost}", **unleased)

    def extend_leases_after_restart(self) -> int:
        """Give every held lease one more TTL: gateways could not renew while we were down."""
        expires = self.clock() + timedelta(seconds=self.settings.lease_ttl_s)
        with self.db.write() as s:
            result = s.execute(
                update(t.Task)
                .where(t.Task.state.in_(HANDED_OUT_STATES), t.Task.lease_id.is_not(None))
                .values(lease_expires_at=expires)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def pool_rows(self, cpis: Sequence[str] | None = None) -> list[t.Pool]:
        """Pool rows, all or the named ones."""
        with self.db.read() as s:
            q = select(t.Pool).order_by(t.Pool.cpi)
            if cpis is not None:
                q = q.where(t.Pool.cpi.in_(cpis))
            return list(s.scalars(q))
