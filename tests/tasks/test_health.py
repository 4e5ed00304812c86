"""The pure pool-health decisions on their own: what a heartbeat makes of a pool, where the
silence boundary lies (in wall-clock time and in virtual seconds), and what a silent pool
gives back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from computenet.model.pool import PoolHealth
from computenet.tasks.dispatching import Placed
from computenet.tasks.health import Beat, heard, silence_cutoff, silent, unplaced, went_silent
from computenet.tasks.lifecycle import Phase

H, U = PoolHealth.HEALTHY, PoolHealth.UNHEALTHY


def test_a_heartbeat_makes_a_pool_healthy_only_when_it_vouches_for_it() -> None:
    assert heard(True) is H
    assert heard(False) is U
    assert heard(None) is U  # not listed in the heartbeat


def test_a_pool_goes_silent_strictly_after_the_timeout_in_wall_clock_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ago = [
        Beat("old", H, now - timedelta(seconds=20.5)),
        Beat("at-timeout", H, now - timedelta(seconds=20)),
        Beat("fresh", H, now - timedelta(seconds=1)),
        Beat("already-unhealthy", U, now - timedelta(seconds=99)),
        Beat("never-heard", H, None),
        Beat("also-old", H, now - timedelta(seconds=600)),
    ]
    assert silence_cutoff(now, 20.0) == now - timedelta(seconds=20)
    assert silent(ago, now, 20.0) == ["also-old", "old"]
    assert silent(ago, now + timedelta(microseconds=1), 20.0) == [
        "also-old",
        "at-timeout",
        "old",
    ]
    assert silent(ago, now, 1000.0) == []


def test_virtual_seconds_follow_the_same_boundary() -> None:
    beats = [Beat("a", H, 10.0), Beat("b", H, 11.0), Beat("c", U, 0.0)]
    assert silence_cutoff(30.0, 20.0) == 10.0
    assert silent(beats, 30.0, 20.0) == []
    assert silent(beats, 30.5, 20.0) == ["a"]
    assert silent(beats, 31.5, 20.0) == ["a", "b"]


def test_a_silent_pool_gives_back_its_placed_unleased_tasks_only() -> None:
    placed = [
        Placed("placed", Phase.PLACED, "p1", 0, 3),
        Placed("placed-early", Phase.PLACED, "p1", 0, 1),
        Placed("leased", Phase.PLACED, "p1", 0, 2, leased=True),
        Placed("running", Phase.RUNNING, "p1", 0, 4),
        Placed("forwarded", Phase.FORWARDED, "p1", 0, 5),
        Placed("elsewhere", Phase.PLACED, "p2", 0, 6),
        Placed("waiting", Phase.WAITING, None, 0, 7),
    ]
    assert unplaced(placed, {"p1"}) == ["placed", "placed-early"]
    assert unplaced(placed, set()) == []

    beats = [Beat("p1", H, 0.0), Beat("p2", H, 25.0)]
    decided = went_silent(beats, placed, 30.0, 20.0)
    assert decided.unhealthy == ("p1",)
    assert decided.unplaced == ("placed", "placed-early")
    nothing = went_silent(beats, placed, 20.0, 20.0)
    assert (nothing.unhealthy, nothing.unplaced) == ((), ())
