"""Issue 18: a forwarded replica's interim usage, and the requests it served, reach the
origin's ledger signed by the node that runs it, the same way a finished attempt's usage
does; a tampered interval is refused; the two nodes' settlement still agrees and balances.

Two real nodes' services under one fake clock; the owner's snapshots (what its
``task.status`` and ``task.update`` messages carry) are applied at the origin by
``mirror_task``, the function those messages' handlers call.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from computenet.billing.ledger import period_of
from computenet.billing.metering import Meter
from computenet.billing.settlement import reconcile, settlement
from computenet.billing.statements import invoice
from computenet.federation.mirror import mirror_task
from computenet.model.protocol import TaskReport
from computenet.model.task import TaskState
from computenet.node.runtime import NodeRuntime
from computenet.store import tables as t
from computenet.store.tables_billing import InterimUsage
from computenet.store.tables_federation import FedForward
from computenet.tasks.clock import FakeClock
from replicaworld import (
    INTERVAL_S,
    PRICE,
    card_hours,
    charges,
    finish,
    gateway,
    interim,
    node,
    replica_spec,
)

ORIGIN, OWNER = "cn.31", "cn.52"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def origin(tmp_path: Path, clock: FakeClock) -> Iterator[NodeRuntime]:
    yield from node(tmp_path / "origin", ORIGIN, clock)


@pytest.fixture
def owner(tmp_path: Path, clock: FakeClock) -> Iterator[NodeRuntime]:
    yield from node(tmp_path / "owner", OWNER, clock)


def _forwarded_replica(
    origin: NodeRuntime, owner: NodeRuntime, clock: FakeClock
) -> tuple[str, str, str]:
    """The origin's controller made a replica for acme and forwarded it; the owner runs it
    for the tenant ``federation:<origin>`` under the same id."""
    gid = gateway(owner, clock)
    tid = origin.tasks.submit(replica_spec(), "acme/alice", tenant="acme")[0]
    fed = f"federation:{ORIGIN}"
    owner.tasks.submit(replica_spec(), fed, tenant=fed, tid=tid)
    assert owner.placer.schedule_pass() == 1
    [lease] = owner.dispatch.lease(gid, 5)
    owner.dispatch.report(gid, tid, TaskReport(lease_id=lease.lease_id, state=TaskState.RUNNING))
    with owner.db.read() as s:
        row = s.get(t.Task, tid)
        assert row is not None and row.pool_cpi is not None
        pool = row.pool_cpi
    with origin.db.write() as s:
        s.add(
            FedForward(
                task_id=tid,
                target=OWNER,
                target_url="http://owner",
                pool_cpi=pool,
                state="confirmed",
                created_at=clock.now,
                updated_at=clock.now,
            )
        )
    return gid, tid, lease.lease_id


def _push(origin: NodeRuntime, owner: NodeRuntime, tid: str, tamper: bool = False) -> None:
    [snap] = owner.federation.forwarder._snapshots([tid])
    if tamper:
        snap = copy.deepcopy(snap)
        rec = snap["signed_interim"][-1]["record"]
        rec["charge"]["quantity"] = "0"  # adds up, but is not what the owner signed
        rec["charge"]["amount"] = "0"
    sender = owner.federation.ident.chain[-1].body
    mirror_task(origin.db, sender, snap, owner.clock())


def test_interim_usage_and_requests_reach_the_origin_signed(
    origin: NodeRuntime, owner: NodeRuntime, clock: FakeClock
) -> None:
    gid, tid, lease = _forwarded_replica(origin, owner, clock)
    served = {tid: 12}  # requests the owner's router sent to its replica
    meter = Meter(owner.db, owner.ledger, INTERVAL_S, clock, lambda: served)
    assert (
        Meter(origin.db, origin.ledger, INTERVAL_S, clock).tick() == 0
    )  # not the origin's to meter
    clock.advance(50)
    assert meter.tick() == 7
    _push(origin, owner, tid)
    _push(origin, owner, tid)  # the same snapshot again (a pull after a push): nothing twice
    period = period_of(clock.now.astimezone(UTC))
    assert len(interim(origin, tid)) == 7
    st = invoice(origin.db, "acme", period)
    [line] = st.lines
    assert line.pool.startswith(f"{OWNER}/") and line.quantity == card_hours(Decimal(49))
    assert line.amount == card_hours(Decimal(49)) * PRICE
    assert st.requests == {"web": 12}  # counted on the owner's node, billed at the origin

    clock.advance(7)
    assert meter.tick() == 1
    _push(origin, owner, tid, tamper=True)
    assert len(interim(origin, tid)) == 7  # a tampered interval is never billed
    _push(origin, owner, tid)
    assert len(interim(origin, tid)) == 8

    clock.advance(3.5)
    wall = Decimal("60.5")
    finish(owner, gid, tid, lease, wall)
    _push(origin, owner, tid)
    total = card_hours(wall) * PRICE
    assert sum(c.amount for c in charges(owner, tid)) == total
    assert sum(c.amount for c in charges(origin, tid)) == total
    with origin.db.read() as s:
        tenants = set(s.scalars(select(InterimUsage.tenant).where(InterimUsage.task_id == tid)))
    assert tenants == {"acme"}

    mine = settlement(origin.db, ORIGIN, OWNER, period)
    theirs = settlement(owner.db, OWNER, ORIGIN, period)
    assert reconcile(mine, theirs) == [] and reconcile(theirs, mine) == []
    [(line_tid, attempt, currency, amount)] = mine.owed_to_peer  # one line per attempt
    assert (line_tid, attempt, currency, Decimal(amount)) == (tid, 1, "CNY", total)
    assert mine.net()["CNY"] + theirs.net()["CNY"] == 0 and theirs.net()["CNY"] == total
