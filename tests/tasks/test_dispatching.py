"""The pure dispatch decisions on their own: what filters a lease, what orders and caps it,
and where an expiry's boundary lies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from computenet.tasks.dispatching import Held, Placed, expiries, lease_order
from computenet.tasks.lifecycle import Event, Phase


def test_a_lease_gets_placed_unleased_tasks_on_its_pools_by_priority_then_submission() -> None:
    placed = [
        Placed("late-urgent", Phase.PLACED, "p1", 5, 9),
        Placed("early", Phase.PLACED, "p2", 0, 1),
        Placed("later", Phase.PLACED, "p1", 0, 4),
        Placed("low", Phase.PLACED, "p1", -2, 0),
        Placed("other-gateway", Phase.PLACED, "q1", 9, 0),
        Placed("already-leased", Phase.PLACED, "p1", 9, 2, leased=True),
        Placed("forwarded", Phase.FORWARDED, "p1", 9, 3),
        Placed("waiting", Phase.WAITING, None, 9, 5),
    ]
    pools = {"p1", "p2"}
    assert lease_order(placed, pools, 10) == ["late-urgent", "early", "later", "low"]
    assert lease_order(placed, pools, 2) == ["late-urgent", "early"]
    assert lease_order(placed, pools, 0) == []
    assert lease_order(placed, set(), 10) == []


def test_a_lease_expires_strictly_after_its_end_with_the_lost_lease_outcome() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    held = [
        Held("ended", Phase.RUNNING, 1, now - timedelta(seconds=1)),
        Held("ends-now", Phase.LEASED, 1, now),
        Held("spent", Phase.LEASED, 3, now - timedelta(seconds=1)),
        Held("cancelling", Phase.CANCELING, 3, now - timedelta(seconds=1)),
        Held("no-lease", Phase.RUNNING, 1, None),  # mirrored from another node
        Held("finished", Phase.COMPLETE, 1, now - timedelta(seconds=1)),
    ]
    got = [(e.task_id, e.event, e.phase) for e in expiries(held, now, max_attempts=3)]
    assert got == [
        ("cancelling", Event.LEASE_LOST, Phase.CANCELED),
        ("ended", Event.LEASE_LOST, Phase.WAITING),
        ("spent", Event.GAVE_UP, Phase.SYSTEM_ERROR),
    ]
    # Virtual seconds work the same way.
    assert [e.task_id for e in expiries([Held("x", Phase.LEASED, 0, 10.0)], 10.5, 3)] == ["x"]
