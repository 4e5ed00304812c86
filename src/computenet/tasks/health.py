"""Pool health as pure functions: what a heartbeat makes of a pool, which pools have gone
silent at a given time, and which placed tasks a silent pool gives back. No I/O, no clock.

The live dispatcher (:class:`computenet.node.dispatch.Dispatcher`) reads candidate pools
and tasks from its store into these records and writes back what the functions decide; the
simulator's placer keeps the same records of its pools in virtual seconds and calls the same
functions, so the silence rule and what it un-places cannot drift between the two.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic

from computenet.model.pool import PoolHealth
from computenet.tasks.dispatching import Placed, When
from computenet.tasks.lifecycle import Phase


@dataclass(frozen=True)
class Beat(Generic[When]):
    """A pool as the silence rule sees it: its health and when its gateway last vouched
    for it (``None``: never)."""

    pool: str
    health: PoolHealth
    last_heartbeat_at: When | None


@dataclass(frozen=True)
class Silence:
    """What a silence check decides: the pools that turn unhealthy, and the placed (not
    yet leased) tasks on them that go back to the queue; both sorted."""

    unhealthy: tuple[str, ...]
    unplaced: tuple[str, ...]


def heard(vouched: bool | None) -> PoolHealth:
    """A pool's health after its gateway's heartbeat: healthy when the heartbeat vouches
    for it, unhealthy when it says the pool is unhealthy or does not list it (``None``)."""
    return PoolHealth.HEALTHY if vouched else PoolHealth.UNHEALTHY


def silence_cutoff(now: When, timeout_s: float) -> When:
    """The time before which a pool's last heartbeat makes it silent at ``now``."""
    if isinstance(now, datetime):
        return now - timedelta(seconds=timeout_s)
    return now - timeout_s


def silent(pools: Iterable[Beat[When]], now: When, timeout_s: float) -> list[str]:
    """The healthy pools whose last heartbeat is older than ``timeout_s`` at ``now``
    (strictly: a heartbeat exactly ``timeout_s`` ago still holds), sorted."""
    cutoff = silence_cutoff(now, timeout_s)
    return sorted(
        p.pool
        for p in pools
        if p.health is PoolHealth.HEALTHY
        and p.last_heartbeat_at is not None
        and p.last_heartbeat_at < cutoff
    )


def unplaced(placed: Iterable[Placed], pools: Collection[str]) -> list[str]:
    """The tasks placed on ``pools`` and not yet leased, sorted: they may go elsewhere.
    Leased ones stay until their lease expires (:func:`~computenet.tasks.dispatching.expiries`)."""
    return sorted(
        p.task_id for p in placed if p.phase is Phase.PLACED and not p.leased and p.pool in pools
    )


def went_silent(
    pools: Iterable[Beat[When]], placed: Iterable[Placed], now: When, timeout_s: float
) -> Silence:
    """The silence check at ``now``: :func:`silent` pools and what they un-place."""
    gone = silent(pools, now, timeout_s)
    return Silence(tuple(gone), tuple(unplaced(placed, set(gone))))
