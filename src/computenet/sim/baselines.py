"""Baseline placers, each named after the behaviour it copies.

All serve pending jobs in arrival order and place each on a pool with enough free cards
now (backfilling past jobs that do not fit); they differ only in which such pool wins.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from computenet.sim.placers import can_run
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job

Chooser = Callable[[Job, list[SimPool], Mapping[str, int]], SimPool]


class GreedyPlacer:
    """Arrival order, first pool the chooser picks among those with room now."""

    def __init__(self, name: str, topology: Topology, choose: Chooser) -> None:
        self.name = name
        self._pools = topology.pools
        self._choose = choose

    def place(
        self,
        now_s: float,
        pending: Sequence[Job],
        free: Mapping[str, int],
        held: Mapping[str, int],
    ) -> list[tuple[Job, SimPool]]:
        """Place what fits now, consuming free cards as it goes (tenants play no part)."""
        left = dict(free)
        out: list[tuple[Job, SimPool]] = []
        for job in pending:
            room = [p for p in self._pools if can_run(job, p) and left[p.pool_id] >= job.cards]
            if room:
                pool = self._choose(job, room, left)
                left[pool.pool_id] -= job.cards
                out.append((job, pool))
        return out


def random_placer(topology: Topology, seed: int = 0) -> GreedyPlacer:
    """random: any pool with room, uniformly (seeded)."""
    rng = random.Random(seed)
    return GreedyPlacer("random", topology, lambda job, room, free: rng.choice(room))


def round_robin(topology: Topology) -> GreedyPlacer:
    """round-robin: the next pool with room after the one used last, in topology order."""
    order = {p.pool_id: i for i, p in enumerate(topology.pools)}
    n = len(order)
    last = [-1]

    def choose(job: Job, room: list[SimPool], free: Mapping[str, int]) -> SimPool:
        pool = min(room, key=lambda p: (order[p.pool_id] - last[0] - 1) % n)
        last[0] = order[pool.pool_id]
        return pool

    return GreedyPlacer("round-robin", topology, choose)


def cheapest_first(topology: Topology) -> GreedyPlacer:
    """cheapest-first: the lowest price per card-hour with room, as a price-catalog broker
    (SkyPilot-style) picks the cheapest offer available and fails over to the next."""
    return GreedyPlacer(
        "cheapest-first",
        topology,
        lambda job, room, free: min(room, key=lambda p: p.price_per_card_hour),
    )


def least_loaded(topology: Topology) -> GreedyPlacer:
    """least-loaded: the largest free fraction, like Kubernetes' default LeastAllocated spread."""
    return GreedyPlacer(
        "least-loaded",
        topology,
        lambda job, room, free: max(room, key=lambda p: free[p.pool_id] / p.cards),
    )


def first_fit(topology: Topology) -> GreedyPlacer:
    """first-fit: the first pool in topology order that admits the job."""
    return GreedyPlacer("first-fit", topology, lambda job, room, free: room[0])


BASELINES: dict[str, Callable[[Topology], GreedyPlacer]] = {
    "random": random_placer,
    "round-robin": round_robin,
    "cheapest-first": cheapest_first,
    "least-loaded": least_loaded,
    "first-fit": first_fit,
}
