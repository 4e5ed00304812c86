"""Virtual-time event loop: arrivals, a scheduling round at each event time, completions.

Time jumps from event to event (a job arriving, a job finishing). After each batch of
events at one instant, the placer is asked once which pending jobs start now; a placed job
holds its cards from that instant until it ends (input transfer, then its run time on that
pool's accelerator). The engine checks every decision, so no policy can overfill a pool or
start a job where it cannot run.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from computenet.errors import ComputeNetError
from computenet.sim.placers import Placer, can_run
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job


class PlacementError(ComputeNetError):
    """A placer broke the rules: a pool overfilled, a job placed twice or where it cannot run."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What happened to one job."""

    job: Job
    pool: SimPool
    start_s: float
    transfer_s: float
    end_s: float

    @property
    def jct_s(self) -> float:
        """Job completion time: arrival to end."""
        return self.end_s - self.job.arrival_s

    @property
    def wait_s(self) -> float:
        """Queue wait: arrival to placement."""
        return self.start_s - self.job.arrival_s

    @property
    def held_s(self) -> float:
        """How long the job held its cards (transfer and run)."""
        return self.end_s - self.start_s

    @property
    def cost(self) -> Decimal:
        """Price x cards x hours held, exactly."""
        return self.pool.price_per_card_hour * self.job.cards * Decimal(self.held_s) / 3600

    @property
    def energy_kwh(self) -> float:
        """Card power x cards x hours held x the site's PUE."""
        card_kw = self.pool.card_power_w / 1000
        return card_kw * self.job.cards * self.held_s / 3600 * self.pool.pue

    @property
    def carbon_kg(self) -> float:
        """Energy x the site's grid carbon intensity."""
        return self.energy_kwh * self.pool.carbon_g_per_kwh / 1000


@dataclass(frozen=True)
class SimResult:
    """One policy's run over one trace."""

    policy: str
    topology: Topology
    records: list[JobRecord]
    unplaceable: list[Job]  # jobs no pool of the topology can ever run
    rounds: int


def lower_bound_s(job: Job, topology: Topology) -> float:
    """The job alone on its fastest option: min over pools of transfer + run time."""
    return min(
        topology.transfer_s(job.origin, p, job.input_gb) + job.runtime_s[p.accelerator]
        for p in topology.pools
        if can_run(job, p)
    )


def simulate(
    jobs: Sequence[Job],
    topology: Topology,
    placer: Placer,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run ``jobs`` through ``placer`` on ``topology`` in virtual time."""
    pools = {p.pool_id: p for p in topology.pools}
    free = {p.pool_id: p.cards for p in topology.pools}
    arrivals = sorted(jobs, key=lambda j: j.arrival_s)
    running: list[tuple[float, int, str, int, str]] = []  # (end, seq, pool, cards, tenant)
    held: dict[str, int] = {}  # cards held per tenant
    pending: list[Job] = []
    records: list[JobRecord] = []
    unplaceable: list[Job] = []
    placed: set[str] = set()
    next_arrival = 0
    rounds = 0
    while next_arrival < len(arrivals) or running:
        now = min(
            arrivals[next_arrival].arrival_s if next_arrival < len(arrivals) else float("inf"),
            running[0][0] if running else float("inf"),
        )
        while running and running[0][0] <= now:
            _, _, pool_id, cards, tenant = heapq.heappop(running)
            free[pool_id] += cards
            held[tenant] -= cards
            if progress is not None:
                progress(1)
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s <= now:
            job = arrivals[next_arrival]
            next_arrival += 1
            if any(can_run(job, p) for p in topology.pools):
                pending.append(job)
            else:
                unplaceable.append(job)
                if progress is not None:
                    progress(1)
        ready = _fits_now(pending, topology, free)
        if not ready:
            continue
        rounds += 1
        started: set[str] = set()
        for job, pool in placer.place(now, ready, dict(free), dict(held)):
            if job.job_id in placed or not can_run(job, pool) or free[pool.pool_id] < job.cards:
                raise PlacementError(f"{placer.name} placed {job.job_id} on {pool.pool_id} badly")
            pool = pools[pool.pool_id]
            free[pool.pool_id] -= job.cards
            held[job.tenant] = held.get(job.tenant, 0) + job.cards
            placed.add(job.job_id)
            started.add(job.job_id)
            transfer = topology.transfer_s(job.origin, pool, job.input_gb)
            end = now + transfer + job.runtime_s[pool.accelerator]
            records.append(JobRecord(job, pool, now, transfer, end))
            heapq.heappush(running, (end, len(records), pool.pool_id, job.cards, job.tenant))
        if started:
            pending = [j for j in pending if j.job_id not in started]
    return SimResult(placer.name, topology, records, unplaceable, rounds)


def _fits_now(pending: list[Job], topology: Topology, free: dict[str, int]) -> list[Job]:
    """Pending jobs that fit on some pool now, in arrival order.

    Only these can be placed this round (free cards only shrink within a round), so the
    placer sees exactly the jobs it could start.
    """
    if not pending:
        return []
    best: dict[tuple[str, int], int] = {}
    for p in topology.pools:
        key = (p.accelerator, p.memory_gib)
        best[key] = max(best.get(key, 0), free[p.pool_id])
    return [
        j
        for j in pending
        if any(
            room >= j.cards and acc in j.runtime_s and mem >= j.min_memory_gib
            for (acc, mem), room in best.items()
        )
    ]
