"""What the engine asks each scheduling round: which pending jobs go to which pool now.

A placer sees the pending jobs that fit somewhere (in arrival order), the free cards per
pool and the cards each tenant holds now, and answers (job, pool) pairs. The live core is
one placer (``core_adapter``); the baselines (``baselines``) are the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from computenet.sim.topology import SimPool
from computenet.sim.trace import Job


class Placer(Protocol):
    """One placement policy, as the engine drives it."""

    name: str

    def place(
        self,
        now_s: float,
        pending: Sequence[Job],
        free: Mapping[str, int],
        held: Mapping[str, int],
    ) -> list[tuple[Job, SimPool]]:
        """Choose pools for some of ``pending``; never more cards than ``free`` per pool."""
        ...


@dataclass(frozen=True)
class Check:
    """What a housekeeping check decided at one instant: jobs a gateway that came back was
    handed (they start now), jobs whose lease ran out (back to the queue, or given up after
    the node's attempt limit), pools that turned unhealthy, and placed jobs they gave back."""

    started: list[tuple[Job, SimPool]]
    requeued: list[str]
    failed: list[str]
    unhealthy: tuple[str, ...] = ()
    unplaced: tuple[str, ...] = ()


@runtime_checkable
class Watched(Protocol):
    """A placer that models gateways going silent: the engine wakes it at ``checks_s``,
    holds back what a silent gateway reports, and tells it when a job ends."""

    def checks_s(self) -> list[float]:
        """The virtual times at which :meth:`check` may change something."""
        ...

    def check(self, now_s: float) -> Check:
        """Heartbeats, lease expiry and pool silence at ``now_s``."""
        ...

    def silent_until(self, pool: str, now_s: float) -> float | None:
        """When ``pool``'s silent gateway is heard again (its reports arrive then)."""
        ...

    def ended(self, job_id: str) -> None:
        """``job_id`` finished and its gateway reported it: its lease is over."""
        ...


def can_run(job: Job, pool: SimPool) -> bool:
    """True when ``pool`` could ever run ``job``: its model, its memory, enough cards."""
    return (
        pool.accelerator in job.runtime_s
        and pool.memory_gib >= job.min_memory_gib
        and pool.cards >= job.cards
    )
