"""Task service: submit, read, list and cancel, on top of the store.

Every change is committed before the call returns, so an acknowledged task is never lost.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from computenet.billing.ledger import Ledger
from computenet.errors import BudgetExceeded, Conflict, Forbidden, InvalidInput, NotFound
from computenet.model.cpi import CPI
from computenet.model.ids import task_id
from computenet.model.task import TaskSpec, TaskState
from computenet.model.urlpolicy import UrlPolicy
from computenet.node.access import Visibility
from computenet.node.outputs import attach_outputs, load_outputs
from computenet.node.views import TaskListOut, TaskOut, View, spec_json, task_out
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.tasks.clock import Clock, utcnow
from computenet.tasks.lifecycle import HANDED_OUT_STATES, Event, Phase
from computenet.tasks.transitions import create, current_phase, move

MAX_PAGE_SIZE = 2047  # TES: "must be less than 2048"
DEFAULT_PAGE_SIZE = 256


# States of work that a gateway holds (QUEUED work holds its pool's capacity once placed).
ACTIVE = HANDED_OUT_STATES
__all__ = ["ACTIVE", "utcnow"]


class _SeqClock:
    """Strictly increasing microsecond stamps: FIFO order and stable pagination keys."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def floor(self, value: int) -> None:
        """Never issue a stamp at or below ``value`` (the newest stored at start-up)."""
        with self._lock:
            self._last = max(self._last, value)

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


@dataclass(frozen=True)
class ListFilter:
    """TES list filters."""

    name_prefix: str | None = None
    state: TaskState | None = None
    tags: dict[str, str] | None = None


class TaskService:
    """Submit, read, list and cancel tasks."""

    def __init__(
        self,
        db: Database,
        node_code: str,
        url_policy: UrlPolicy | None = None,
        ledger: Ledger | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.clock = clock
        self.node_code = node_code
        # Called with each new task's id before the placer is woken (the monitor's trace id).
        self.on_created: Callable[[str], None] = lambda _tid: None
        self.url_policy = url_policy or UrlPolicy()
        self.ledger = ledger or Ledger(db)
        self._seq = _SeqClock()

    def resume(self) -> None:
        """Continue the task order after the newest stored task, whatever the clock says."""
        with self.db.read() as s:
            newest = s.scalar(select(func.max(t.Task.seq)))
        self._seq.floor(int(newest or 0))

    def submit(
        self,
        spec: TaskSpec,
        owner: str,
        client_key: str | None = None,
        tenant: str | None = None,
        tid: str | None = None,
    ) -> tuple[str, bool]:
        """Store a new task and queue it; return ``(id, created)``.

        With a ``client_key``, a repeated submission returns the first task instead of a
        second one; reusing the key for a different task is refused. ``tenant`` pays (the
        owner itself when None); a task that could break its budget is refused. ``tid`` keeps
        the global id of a task forwarded from another node.
        """
        if spec.placement.pool is not None:
            pinned = str(CPI.parse(spec.placement.pool))
            spec = spec.model_copy(
                update={"placement": spec.placement.model_copy(update={"pool": pinned})}
            )
        payer = tenant or owner
        if spec.placement.tenant not in (None, payer):
            raise Forbidden(
                f"placement.tenant {spec.placement.tenant!r} is not yours: your work counts "
                f"against {payer!r}"
            )
        if client_key is not None and not (0 < len(client_key) <= 256):
            raise InvalidInput("an idempotency key must be 1-256 characters")
        urls = [i.url for i in spec.inputs if i.url is not None] + [o.url for o in spec.outputs]
        self.url_policy.check_all(urls)
        stored = spec_json(spec)
        check_storable(stored)
        now = self.clock()
        need = spec.resources.need()
        tid = tid or task_id(self.node_code)
        row = {
            "id": tid,
            "seq": self._seq.next(),
            "owner": owner,
            "client_key": client_key,
            "name": spec.name,
            "spec": stored,
            "priority": spec.placement.priority,
            "cpu_cores": need.cpu_cores,
            "memory_mib": need.memory_mib,
            "accelerators": need.accelerators,
            "attempt": 0,
            "reason": "waiting for the scheduler",
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "tags": spec.tags,
            "tenant": tenant,
        }
        try:
            # Insert first: the unique (owner, client_key) index decides repeats, so a new
            # task costs one write and no read, and concurrent repeats cannot both win.
            with self.db.write() as s:
                row["max_charge"] = self.ledger.hold(s, spec, tenant or owner, now)
                create(s, row, now)
                # Before the commit, which wakes the placer: the task may be placed and
                # leased at once, and its lease must carry the trace id.
                self.on_created(tid)
        except BudgetExceeded:
            # A repeat of a task already held against the budget is that task, not a refusal.
            repeat = None if client_key is None else self._by_key(owner, client_key, stored)
            if repeat is None:
                raise
            return repeat, False
        except IntegrityError:
            existing = None if client_key is None else self._by_key(owner, client_key, stored)
            if existing is None:
                raise
            return existing, False
        return tid, True

    def _by_key(self, owner: str, client_key: str, stored: dict[str, object]) -> str | None:
        with self.db.read() as s:
            row = s.scalars(
                select(t.Task).where(t.Task.owner == owner, t.Task.client_key == client_key)
            ).first()
        if row is None:
            return None
        if row.spec != stored:
            raise Conflict(f"idempotency key {client_key!r} was already used for another task")
        return row.id

    def get(self, tid: str, view: View = View.FULL, scope: Visibility | None = None) -> TaskOut:
        """One task at the given view; ``scope`` limits it to what the caller may see."""
        check_task_id(tid)
        with self.db.read() as s:
            row = s.get(t.Task, tid)
            if row is None or (scope is not None and not scope.allows(row)):
                raise NotFound(f"no task {tid!r}")
            if view is View.MINIMAL:
                return task_out(row, view)
            logs = list(
                s.scalars(
                    select(t.ExecutorLog)
                    .where(t.ExecutorLog.task_id == tid)
                    .order_by(t.ExecutorLog.attempt, t.ExecutorLog.index)
                )
            )
            events = list(
                s.scalars(
                    select(t.TaskEvent).where(t.TaskEvent.task_id == tid).order_by(t.TaskEvent.id)
                )
            )
            usage = list(
                s.scalars(
                    select(t.UsageRecord)
                    .where(t.UsageRecord.task_id == tid)
                    .order_by(t.UsageRecord.attempt)
                )
            )
            out = task_out(row, view, logs, events, usage)
            attach_outputs(out, load_outputs(s, tid))
            return out

    def list(
        self,
        view: View = View.MINIMAL,
        page_size: int | None = None,
        page_token: str | None = None,
        filt: ListFilter | None = None,
        scope: Visibility | None = None,
    ) -> TaskListOut:
        """A page of tasks, newest first, with a token for the next page."""
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if not (1 <= size <= MAX_PAGE_SIZE):
            raise InvalidInput(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        q = select(t.Task).order_by(t.Task.seq.desc())
        if page_token:
            try:
                after = int(page_token)
            except ValueError:
                after = -1
            if not 0 < after < 2**63:
                raise InvalidInput("page_token is not one this server issued")
            q = q.where(t.Task.seq < after)
        if scope is not None:
            q = scope.where(q)
        filt = filt or ListFilter()
        check_storable({"name_prefix": filt.name_prefix, "tags": filt.tags})
        if filt.name_prefix:
            q = q.where(t.Task.name.startswith(filt.name_prefix, autoescape=True))
        if filt.state is not None:
            q = q.where(t.Task.state == filt.state.value)
        tags = filt.tags or {}
        with self.db.read() as s:
            rows: list[t.Task] = []
            # Tag filters are matched here, not in SQL, because JSON operators differ
            # between SQLite and PostgreSQL; pages are read in chunks until full.
            chunk_q = q.limit(size + 1 if not tags else max(size * 4, 256))
            while True:
                chunk = list(s.scalars(chunk_q))
                rows.extend(r for r in chunk if _tags_match(r.tags or {}, tags))
                if len(rows) > size or not tags or len(chunk) == 0:
                    break
                chunk_q = chunk_q.where(t.Task.seq < chunk[-1].seq)
            more = len(rows) > size
            rows = rows[:size]
            tasks = [task_out(r, view) for r in rows]
            if view is View.FULL:
                tasks = [self.get(r.id, view) for r in rows]
        token = str(rows[-1].seq) if more and rows else None
        return TaskListOut(tasks=tasks, next_page_token=token)

    def cancel(self, tid: str, scope: Visibility | None = None) -> TaskState:
        """Cancel a task: at once if not yet leased, else ask its gateway to stop it."""
        now = self.clock()
        check_task_id(tid)
        with self.db.write() as s:
            row = s.get(t.Task, tid, with_for_update=True)
            if row is None or (scope is not None and not scope.allows(row)):
                raise NotFound(f"no task {tid!r}")
            state = TaskState(row.state)
            if state in (TaskState.CANCELED, TaskState.CANCELING):
                return state
            if state.terminal:
                raise Conflict(f"task {tid} already finished ({state.value})")
            if current_phase(s, row) in (Phase.WAITING, Phase.PLACED, Phase.FORWARDED):
                # A forwarded one is canceled here too; the forwarder tells the owner node.
                move(
                    s,
                    row,
                    Event.CANCEL_REQUESTED,
                    now,
                    "canceled before it was dispatched",
                    ended_at=now,
                    reason="",
                    pool_cpi=None,
                )
                result = TaskState.CANCELED
            else:
                move(
                    s,
                    row,
                    Event.CANCEL_REQUESTED,
                    now,
                    "cancel requested; stopping on gateway",
                    cancel_requested=True,
                )
                result = TaskState.CANCELING
        return result


_TASK_ID = re.compile(r"[a-z0-9.]{1,64}-[0-9A-Z]{26}")


def check_task_id(tid: str) -> None:
    """Refuse what cannot be a task id (404, as for an unknown one) before it reaches SQL."""
    if not _TASK_ID.fullmatch(tid):
        raise NotFound(f"no task {tid!r}")


def check_storable(data: object) -> None:
    """Refuse text no store can keep: lone UTF-16 surrogates, and NUL (PostgreSQL refuses it)."""
    try:
        text = json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the task contains text that is not valid Unicode") from None
    if b"\\u0000" in text:
        raise InvalidInput("the task contains a NUL character, which cannot be stored")


def _tags_match(have: dict[str, str], want: dict[str, str]) -> bool:
    """TES tag filter semantics: an empty wanted value matches any value of that key."""
    for key, value in want.items():
        if key not in have:
            return False
        if value and have[key] != value:
            return False
    return True
