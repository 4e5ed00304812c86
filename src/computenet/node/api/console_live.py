"""Live console data: server-sent events, and usage broken down by tenant, provider or
accelerator model.

- ``POST /api/v1/console/events/ticket``: a one-time ticket for the event stream (a browser's
  ``EventSource`` cannot send an ``Authorization`` header, and a bearer token in a URL would
  land in logs; a ticket is single-use and expires in ``TICKET_TTL_S``).
- ``GET /api/v1/console/events?ticket=`` (or with a bearer token): ``text/event-stream``. An
  ``update`` event carries the federation index's change number and counts and the caller's
  tasks by state, with a version that moves whenever one of those tasks changes or a running
  one logs; it is sent at once, then whenever something changed (checked when the node
  signals a change, at least every ``CHECK_S``). Comments keep the connection open; a
  stream ends after ``STREAM_MAX_S`` (the console reconnects with a new ticket) or when the
  node shuts down.
- ``GET /api/v1/console/usage/by?dim=tenant|provider|accelerator``: usage per group and
  time bucket, every bucket of the window present.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import func, select

from computenet.errors import Unauthorized
from computenet.model.task import TaskState
from computenet.node.access import API_ROLES, require_scope
from computenet.node.api.console_interim import billed_by_intervals, closing_charge, intervals_since
from computenet.node.api.deps import Runtime, User, owner_scope, principal
from computenet.node.auth import Principal
from computenet.node.console_cube import live_cube
from computenet.node.runtime import NodeRuntime
from computenet.node.tasks import ACTIVE, utcnow
from computenet.node.views import Amount
from computenet.store import tables as t
from computenet.store.tables_billing import Charge
from computenet.store.tables_federation import FedPool

router = APIRouter(prefix="/api/v1/console", tags=["console"])
TICKET_TTL_S = 60.0
CHECK_S = 5.0
KEEPALIVE_S = 15.0
STREAM_MAX_S = 600.0
MAX_GROUPS = 8  # usage series per chart; the rest are summed as "other"


class Tickets:
    """One-time tickets for the event stream, held in memory (a restart voids them; the
    console asks for a new one when its stream fails)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Principal, float]] = {}

    def issue(self, p: Principal) -> str:
        """A fresh ticket for ``p``, valid once for ``TICKET_TTL_S``."""
        now = self._clock()
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            # Drop expired tickets as new ones are issued, so the map stays small.
            self._held = {k: v for k, v in self._held.items() if v[1] > now}
            self._held[ticket] = (p, now + TICKET_TTL_S)
        return ticket

    def redeem(self, ticket: str) -> Principal:
        """The principal a ticket was issued to; it cannot be used again."""
        with self._lock:
            held = self._held.pop(ticket, None)
        if held is None or held[1] <= self._clock():
            raise Unauthorized("unknown or expired event ticket")
        return held[0]


TICKETS = Tickets()


class Ticket(BaseModel):
    """A one-time ticket for ``GET /api/v1/console/events``."""

    ticket: str
    expires_in_s: float


def _reader(p: Principal) -> Principal:
    """An API caller whose token may read (the stream only reads, so a read-only provider
    token may open it although issuing the ticket is a POST)."""
    p.require(*API_ROLES)
    require_scope(p.kind, p.scopes, "read")
    return p


@router.post("/events/ticket", response_model=Ticket)
def events_ticket(_rt: Runtime, p: Annotated[Principal, Depends(principal)]) -> Ticket:
    """A single-use ticket that opens one event stream as the caller."""
    return Ticket(ticket=TICKETS.issue(_reader(p)), expires_in_s=TICKET_TTL_S)


def _snapshot(rt: NodeRuntime, p: Principal) -> dict[str, Any]:
    """What the console shows live: the index's change number and counts, and the caller's
    tasks by state with a version that moves when any of them changes."""
    scope = owner_scope(p)
    cells = live_cube(rt.db, rt.federation.index).current().cells  # no scan of the index
    pools = sum(c.pools for c in cells.values())
    healthy = sum(c.pools for (_o, _r, health), c in cells.items() if health == "healthy")
    with rt.db.read() as s:
        seq = s.scalar(select(func.max(FedPool.seq)))
        q = select(t.Task.state, func.count(), func.max(t.Task.updated_at)).group_by(t.Task.state)
        if scope is not None:
            q = scope.where(q)
        states: dict[str, int] = {}
        newest: datetime | None = None
        for state, n, at in s.execute(q):
            states[str(state)] = int(n)
            newest = at if newest is None or (at is not None and at > newest) else newest
        # Log text can arrive without a change of state: count what running tasks wrote.
        logs = (
            select(func.sum(t.ExecutorLog.stdout_chars + t.ExecutorLog.stderr_chars))
            .join(t.Task, t.Task.id == t.ExecutorLog.task_id)
            .where(t.Task.state.in_(ACTIVE))
        )
        if scope is not None:
            logs = scope.where(logs)
        log_chars = int(s.scalar(logs) or 0)
    return {
        "pools_seq": int(seq or 0),
        "pools": int(pools or 0),
        "pools_healthy": int(healthy or 0),
        "tasks_by_state": {st.value: states.get(st.value, 0) for st in TaskState},
        "tasks_version": f"{sum(states.values())}@{newest.isoformat() if newest else ''}"
        f"+{log_chars}",
    }


async def _stream(request: Request, rt: NodeRuntime, p: Principal) -> AsyncIterator[str]:
    began = last_sent = time.monotonic()
    previous: dict[str, Any] | None = None
    yield f"retry: {int(CHECK_S * 1000)}\n\n"
    while not rt.draining and time.monotonic() - began < STREAM_MAX_S:
        snap = await asyncio.to_thread(_snapshot, rt, p)
        if snap != previous:
            previous = snap
            last_sent = time.monotonic()
            yield f"event: update\ndata: {json.dumps(snap, separators=(',', ':'))}\n\n"
        elif time.monotonic() - last_sent >= KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await rt.changes.any.wait(CHECK_S)
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.5)  # coalesce bursts of changes into one update


@router.get("/events", include_in_schema=True)
async def events(
    request: Request,
    rt: Runtime,
    ticket: Annotated[str | None, Query(max_length=64)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events for the console, opened with a ticket or a bearer token."""
    p = TICKETS.redeem(ticket) if ticket else _reader(rt.auth.check(authorization))
    return StreamingResponse(
        _stream(request, rt, p),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class UsageGroup(BaseModel):
    """One group's usage per bucket, aligned with ``UsageBreakdown.starts``."""

    key: str
    card_hours: list[Amount]
    cpu_core_hours: list[Amount]
    cost: list[Amount]
    tasks: list[int]


class UsageBreakdown(BaseModel):
    """Usage per group over every bucket of the window (zeros where nothing ran)."""

    dim: str
    bucket_s: int
    starts: list[datetime]
    groups: list[UsageGroup]


def _key(dim: str, tenant: str | None, owner: str, pool: str, model: str | None) -> str:
    if dim == "tenant":
        return tenant or owner
    if dim == "provider":
        return pool.rsplit("/", 1)[0]
    return model or "CPU only"


@router.get("/usage/by", response_model=UsageBreakdown)
def usage_by(
    rt: Runtime,
    p: User,
    dim: Annotated[str, Query(pattern="^(tenant|provider|accelerator)$")] = "tenant",
    bucket_s: Annotated[int, Query(ge=60, le=7 * 86400)] = 3600,
    since_s: Annotated[int, Query(ge=60, le=366 * 86400)] = 7 * 86400,
    node: Annotated[str | None, Query(max_length=140, pattern=r"^[a-z0-9.]*$")] = None,
) -> UsageBreakdown:
    """The caller's visible usage (as ``/usage``) by tenant, provider or accelerator model,
    of work that ran on ``node``'s subtree when given (usage this node holds: tasks
    submitted here, wherever they ran, and tasks that ran here); the ``MAX_GROUPS - 1``
    largest groups by cost then card- and core-hours, the rest as ``other``."""
    now = utcnow()
    first = (int((now - timedelta(seconds=since_s)).timestamp()) // bucket_s) * bucket_s
    count = (int(now.timestamp()) // bucket_s * bucket_s - first) // bucket_s + 1
    u = t.UsageRecord
    q = (
        select(
            u.created_at,
            t.Task.tenant,
            t.Task.owner,
            u.pool_cpi,
            u.accelerator_model,
            u.card_hours,
            u.cpu_core_hours,
            Charge.amount,
            u.task_id,
            u.attempt,
        )
        .join(t.Task, t.Task.id == u.task_id)
        .outerjoin(Charge, closing_charge())
        .where(u.created_at >= datetime.fromtimestamp(first, UTC))
    )

    if node:
        q = q.where(
            u.pool_cpi.startswith(node + "/", autoescape=True)
            | u.pool_cpi.startswith(node + ".", autoescape=True)
        )

    def under_node(pool: str) -> bool:
        return not node or pool.startswith((node + "/", node + "."))

    scope = owner_scope(p)
    if scope is not None:
        q = scope.where(q)
    zero = Decimal(0)
    sums: dict[str, list[list[Any]]] = {}

    def add(
        at: datetime, key: str, cards: Decimal, cores: Decimal, amount: Decimal, n: int
    ) -> None:
        i = min(count - 1, max(0, (int(at.timestamp()) - first) // bucket_s))
        row = sums.setdefault(key, [[zero] * count, [zero] * count, [zero] * count, [0] * count])
        row[0][i] += cards
        row[1][i] += cores
        row[2][i] += amount
        row[3][i] += n

    with rt.db.read() as s:
        rows = list(s.execute(q))
        # A replica's intervals are points of their own; its usage record adds the rest.
        billed = billed_by_intervals(s, ((tid, att) for *_x, tid, att in rows))
        for at, tenant, owner, pool, model, cards, cores, amount, tid, att in rows:
            done = billed.get((tid, att), (zero, zero, zero))
            key = _key(dim, tenant, owner, pool, model)
            add(at, key, cards - done[0], cores - done[1], amount or zero, 1)
        since = datetime.fromtimestamp(first, UTC)
        for iv in intervals_since(s, since, scope):
            if under_node(iv.pool_cpi):
                key = _key(dim, iv.tenant, iv.owner, iv.pool_cpi, iv.accelerator_model)
                add(iv.at, key, iv.card_hours, iv.cpu_core_hours, iv.amount, 0)
    ranked = sorted(sums, key=lambda k: (-sum(sums[k][2]), -sum(sums[k][0]), -sum(sums[k][1]), k))
    keep, rest = ranked[: MAX_GROUPS - 1], ranked[MAX_GROUPS - 1 :]
    if len(rest) == 1:
        keep, rest = ranked, []
    groups = [
        UsageGroup(key=k, card_hours=v[0], cpu_core_hours=v[1], cost=v[2], tasks=v[3])
        for k in keep
        for v in (sums[k],)
    ]
    if rest:
        merged = [
            [sum((sums[k][j][i] for k in rest), zero if j < 3 else 0) for i in range(count)]
            for j in range(4)
        ]
        groups.append(
            UsageGroup(
                key=f"other ({len(rest)})",
                card_hours=merged[0],
                cpu_core_hours=merged[1],
                cost=merged[2],
                tasks=[int(x) for x in merged[3]],
            )
        )
    starts = [datetime.fromtimestamp(first + i * bucket_s, UTC) for i in range(count)]
    return UsageBreakdown(dim=dim, bucket_s=bucket_s, starts=starts, groups=groups)
