"""Issue 18: running service replicas accrue on the bill while they run (``billing.metering``).

A real node's services (store, scheduler, dispatcher, ledger) under a fake clock: a replica
is leased and reported running by the gateway protocol, metering rounds run at chosen
virtual times, and the attempt ends with the gateway's usage report. Every expected amount
is computed here from the wall time and the price, with exact Decimal arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from computenet.billing.ledger import period_of
from computenet.billing.metering import Meter, due_intervals
from computenet.billing.statements import invoice
from computenet.model.task import TaskSpec
from computenet.node.runtime import NodeRuntime
from computenet.store.tables_billing import FINAL
from computenet.tasks.clock import FakeClock
from nodeapi import running_world
from polling import wait_for
from replicaworld import (
    CARDS,
    INTERVAL_S,
    PRICE,
    card_hours,
    charges,
    finish,
    gateway,
    interim,
    node,
    replica_spec,
    run_replica,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[NodeRuntime]:
    yield from node(tmp_path, "cn.52", clock)


def test_due_intervals_are_the_whole_elapsed_ones_not_yet_billed() -> None:
    start = datetime(2026, 12, 1, 23, 59, 0).astimezone()
    at = start + timedelta(seconds=20.9)
    assert due_intervals(start, at, 7, ()) == [0, 1]
    assert due_intervals(start, at + timedelta(seconds=0.1), 7, ()) == [0, 1, 2]
    assert due_intervals(start, at + timedelta(seconds=0.1), 7, {0, 2}) == [1]
    assert due_intervals(start, start - timedelta(seconds=5), 7, ()) == []  # clock behind
    with pytest.raises(ValueError):
        due_intervals(start, at, 0, ())


def test_interim_and_final_charges_add_up_to_the_attempt_exactly(
    rt: NodeRuntime, clock: FakeClock
) -> None:
    gid = gateway(rt, clock)
    tid, lease = run_replica(rt, gid)
    meter = Meter(rt.db, rt.ledger, INTERVAL_S, clock)

    clock.advance(50)  # 7 whole intervals
    assert meter.tick() == 7
    assert meter.tick() == 0  # a round run again bills nothing twice
    # The bill shows the replica's card-hours to date, before its attempt ends.
    [line] = invoice(rt.db, "acme", period_of(clock.now)).lines
    assert line.quantity == card_hours(Decimal(49)) and line.attempts == 1
    assert line.amount == card_hours(Decimal(49)) * PRICE

    # The node restarts mid-interval: a fresh meter (no memory) bills only what is new.
    clock.advance(2)
    restarted = Meter(rt.db, rt.ledger, INTERVAL_S, clock)
    assert restarted.tick() == 0
    clock.advance(8)  # 60 s: interval 7 has elapsed
    assert restarted.tick() == 1
    clock.advance(40.5)  # 100.5 s: intervals 8..13
    assert restarted.tick() == 6
    assert [u.interval_index for u in interim(rt, tid)] == list(range(14))

    wall = Decimal("100.5")
    finish(rt, gid, tid, lease, wall)
    rows = charges(rt, tid)
    assert [c.interval_index for c in rows] == [FINAL, *range(14)]
    for c in rows[1:]:  # each interval: usage at its end less usage at its start, priced
        k = c.interval_index
        assert c.quantity == card_hours(Decimal(7 * (k + 1))) - card_hours(Decimal(7 * k))
        assert c.amount == c.quantity * PRICE
    assert rows[0].quantity == card_hours(wall) - card_hours(Decimal(98))
    assert sum(c.quantity for c in rows) == card_hours(wall)
    assert sum(c.amount for c in rows) == card_hours(wall) * PRICE  # to the last digit
    assert Meter(rt.db, rt.ledger, INTERVAL_S, clock).tick() == 0  # ended: nothing more


def test_a_gateway_measuring_less_than_the_intervals_gets_a_correction(
    rt: NodeRuntime, clock: FakeClock
) -> None:
    gid = gateway(rt, clock)
    tid, lease = run_replica(rt, gid)
    clock.advance(30)
    assert Meter(rt.db, rt.ledger, INTERVAL_S, clock).tick() == 4  # 28 s billed
    finish(rt, gid, tid, lease, Decimal(25))  # the replica's process ran 25 s of them
    rows = charges(rt, tid)
    assert rows[0].quantity == card_hours(Decimal(25)) - card_hours(Decimal(28)) < 0
    assert sum(c.amount for c in rows) == card_hours(Decimal(25)) * PRICE


def test_requests_served_reach_the_invoice_per_service(rt: NodeRuntime, clock: FakeClock) -> None:
    gid = gateway(rt, clock)
    tid, lease = run_replica(rt, gid)
    served: dict[str, int] = {}
    meter = Meter(rt.db, rt.ledger, INTERVAL_S, clock, lambda: served)
    served[tid] = 5
    clock.advance(15)
    assert meter.tick() == 2
    served[tid] = 9  # served during interval 2, which never elapses
    finish(rt, gid, tid, lease, Decimal(15))
    assert meter.tick() == 1  # the last counts: a row of requests only
    assert meter.tick() == 0
    rows = interim(rt, tid)
    assert [(u.interval_index, u.requests) for u in rows] == [(-1, 4), (0, 5), (1, 0)]
    assert rows[0].card_hours == 0
    st = invoice(rt.db, "acme", period_of(clock.now))
    assert st.requests == {"web": 9}
    assert st.as_dict()["requests"] == [{"service": "web", "requests": 9, "amount": "0"}]
    assert "service:web,,request,0,,,9,0" in st.as_csv()
    assert sum(c.amount for c in charges(rt, tid)) == card_hours(Decimal(15)) * PRICE


def test_interim_charges_move_the_hold_to_spent(rt: NodeRuntime, clock: FakeClock) -> None:
    gid = gateway(rt, clock)
    rt.ledger.set_budget("acme", Decimal(5000))
    run_replica(rt, gid)
    before = rt.ledger.budget("acme")
    hold = CARDS * Decimal(86400) * PRICE / 3600
    assert before.spent == 0 and before.held == hold
    clock.advance(3600)
    Meter(rt.db, rt.ledger, 300, clock).tick()
    after = rt.ledger.budget("acme")
    hour = card_hours(Decimal(3600)) * PRICE
    assert (after.spent, after.held, after.left) == (hour, hold - hour, before.left)


def test_an_exhausted_budget_refuses_the_next_replica(rt: NodeRuntime, clock: FakeClock) -> None:
    from computenet.errors import BudgetExceeded

    gid = gateway(rt, clock)
    hold = CARDS * Decimal(86400) * PRICE / 3600
    rt.ledger.set_budget("acme", hold + 1)
    run_replica(rt, gid)
    clock.advance(3600)
    Meter(rt.db, rt.ledger, 300, clock).tick()
    with pytest.raises(BudgetExceeded):
        rt.tasks.submit(replica_spec("api"), "acme/alice", tenant="acme")


def test_two_processes_of_a_node_bill_each_interval_once_and_both_counts(
    rt: NodeRuntime, clock: FakeClock
) -> None:
    """Replicas of one node (on one PostgreSQL) each meter: each interval is billed by one,
    and the requests each one's router counted all reach the bill."""
    gid = gateway(rt, clock)
    tid, lease = run_replica(rt, gid)
    served_a, served_b = {tid: 3}, {tid: 4}
    a = Meter(rt.db, rt.ledger, INTERVAL_S, clock, lambda: served_a)
    b = Meter(rt.db, rt.ledger, INTERVAL_S, clock, lambda: served_b)
    clock.advance(7.5)
    assert (a.tick(), b.tick()) == (1, 0)  # b first sees its counts now
    clock.advance(7.5)
    assert (a.tick(), b.tick()) == (1, 1)  # a billed interval 1; b's counts on their own row
    assert b.tick() == 0  # at most one such row an interval
    rows = interim(rt, tid)
    assert [(u.interval_index, u.requests) for u in rows] == [(-1, 4), (0, 3), (1, 0)]
    finish(rt, gid, tid, lease, Decimal(15))
    assert sum(c.amount for c in charges(rt, tid)) == card_hours(Decimal(15)) * PRICE


def test_the_node_loop_meters_a_running_replica(tmp_path: Path) -> None:
    """The wiring: a running node's metering loop bills a replica's intervals by itself."""
    with running_world(tmp_path, "cn.53", service_metering_interval_s=1) as world:
        gw = world.gateway("acme", price_per_core_hour="0.5")
        spec = replica_spec().model_dump(mode="json", exclude_none=True)
        spec["resources"] = {"cpu_cores": 1, "time_limit_s": 3600}
        tid = world.rt.tasks.submit(TaskSpec.model_validate(spec), "acme/alice", tenant="acme")[0]
        lease = world.lease(gw)
        assert lease["task_id"] == tid
        world.report(gw, lease, "RUNNING")
        wait_for(lambda: interim(world.rt, tid), 15.0, "an interval billed by the loop")
        assert all(c.tenant == "acme" and c.unit == "core_hour" for c in charges(world.rt, tid))
