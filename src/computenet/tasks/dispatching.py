"""Dispatch decisions as pure functions: which placed tasks a gateway's lease call gets, and
which leases have run out at a given time and what becomes of each. No I/O, no clock.

The live dispatcher (:class:`computenet.node.dispatch.Dispatcher`) reads candidate rows from
its store into these records and writes back what the functions decide; the simulator's
placer hands its placed jobs out through :func:`lease_order` too, so the order, the cap and
the expiry rule cannot drift between the two.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from computenet.tasks.lifecycle import HANDED_OUT_PHASES, Event, Phase, apply, lease_lost_event

# Wall-clock time on a live node, virtual seconds in a simulation.
When = TypeVar("When", datetime, float)


@dataclass(frozen=True)
class Placed:
    """A task as a lease call sees it: where it is placed, and what orders it."""

    task_id: str
    phase: Phase
    pool: str | None
    priority: int
    seq: int  # submission order
    leased: bool = False  # holds a lease already


def lease_order(placed: Iterable[Placed], pools: Collection[str], max_tasks: int) -> list[str]:
    """The ids a gateway owning ``pools`` is handed, in order: placed, unleased tasks on
    those pools, highest priority first, then in submission order, at most ``max_tasks``."""
    eligible = (p for p in placed if p.phase is Phase.PLACED and not p.leased and p.pool in pools)
    best = heapq.nsmallest(max(0, max_tasks), eligible, key=lambda p: (-p.priority, p.seq))
    return [p.task_id for p in best]


@dataclass(frozen=True)
class Held(Generic[When]):
    """A handed-out task's lease: its phase, its attempt count and when the lease ends."""

    task_id: str
    phase: Phase
    attempt: int
    expires_at: When | None


@dataclass(frozen=True)
class Expiry:
    """A lease that ran out: the event it applies and the phase the task ends in."""

    task_id: str
    event: Event
    phase: Phase


def lease_lost_outcome(
    phase: Phase, attempt: int, max_attempts: int, cause: Event = Event.LEASE_LOST
) -> tuple[Event, Phase]:
    """The event a lost lease applies (:func:`lease_lost_event`) and the phase it leads to."""
    event = lease_lost_event(phase, attempt, max_attempts, cause)
    return event, apply(phase, event)


def expiries(held: Iterable[Held[When]], now: When, max_attempts: int) -> list[Expiry]:
    """The leases that have run out at ``now`` (strictly before it), by task id, each with
    its outcome: back to waiting, a system error once ``max_attempts`` attempts were had,
    cancelled if it was being cancelled."""
    out = []
    for h in sorted(held, key=lambda h: h.task_id):
        if h.phase in HANDED_OUT_PHASES and h.expires_at is not None and h.expires_at < now:
            event, phase = lease_lost_outcome(h.phase, h.attempt, max_attempts)
            out.append(Expiry(h.task_id, event, phase))
    return out
