"""What the engine asks each scheduling round: which pending jobs go to which pool now.

A placer sees the pending jobs that fit somewhere (in arrival order), the free cards per
pool and the cards each tenant holds now, and answers (job, pool) pairs. The live core is
one placer (``core_adapter``); the baselines (``baselines``) are the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

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


def can_run(job: Job, pool: SimPool) -> bool:
    """True when ``pool`` could ever run ``job``: its model, its memory, enough cards."""
    return (
        pool.accelerator in job.runtime_s
        and pool.memory_gib >= job.min_memory_gib
        and pool.cards >= job.cards
    )
