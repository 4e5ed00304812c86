"""Virtual-time event loop: arrivals, a scheduling round at each event time, completions.

Time jumps from event to event (a job arriving, a job finishing). After each batch of
events at one instant, the placer is asked once which pending jobs start now; a placed job
holds its cards from that instant until it ends (input transfer, then its run time on that
pool's accelerator). The engine checks every decision, so no policy can overfill a pool or
start a job where it cannot run.

A placer that models gateways (:class:`~computenet.sim.placers.Watched`, the core's placer
given outages) is also woken at its housekeeping times: a job whose lease ran out stops
where it was (its cards come free) and waits again, or fails after the attempt limit; a
gateway that came back starts what was placed on it; a job that ends while its gateway is
silent is heard of when the gateway comes back.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from computenet.errors import ComputeNetError
from computenet.sim.placers import Placer, Watched, can_run
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
    failed: list[Job] = field(default_factory=list)  # gave up after the node's attempt limit
    lost_leases: int = 0  # attempts cut short by a silent gateway's lease running out


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
    order = {j.job_id: i for i, j in enumerate(arrivals)}
    running: list[tuple[float, int, str, int, str]] = []  # (end, seq, pool, cards, tenant)
    held: dict[str, int] = {}  # cards held per tenant
    pending: list[Job] = []
    records: list[JobRecord | None] = []  # None: an attempt whose lease was lost
    live: dict[str, int] = {}  # job id -> its running record's index
    unplaceable: list[Job] = []
    failed: list[Job] = []
    placed: set[str] = set()
    watched = placer if isinstance(placer, Watched) else None
    checks = watched.checks_s() if watched is not None else []
    next_arrival = next_check = 0
    rounds = lost_leases = 0

    def start(now: float, job: Job, pool: SimPool) -> None:
        if job.job_id in placed or not can_run(job, pool) or free[pool.pool_id] < job.cards:
            raise PlacementError(f"{placer.name} placed {job.job_id} on {pool.pool_id} badly")
        pool = pools[pool.pool_id]
        free[pool.pool_id] -= job.cards
        held[job.tenant] = held.get(job.tenant, 0) + job.cards
        placed.add(job.job_id)
        transfer = topology.transfer_s(job.origin, pool, job.input_gb)
        end = now + transfer + job.runtime_s[pool.accelerator]
        live[job.job_id] = len(records)
        records.append(JobRecord(job, pool, now, transfer, end))
        heapq.heappush(running, (end, len(records), pool.pool_id, job.cards, job.tenant))

    def stop(job_id: str) -> Job:
        index = live.pop(job_id)
        rec = records[index]
        assert rec is not None
        records[index] = None
        free[rec.pool.pool_id] += rec.job.cards
        held[rec.job.tenant] -= rec.job.cards
        placed.discard(job_id)
        return rec.job

    while next_arrival < len(arrivals) or running or next_check < len(checks):
        now = min(
            arrivals[next_arrival].arrival_s if next_arrival < len(arrivals) else float("inf"),
            running[0][0] if running else float("inf"),
            checks[next_check] if next_check < len(checks) else float("inf"),
        )
        while running and running[0][0] <= now:
            end, seq, pool_id, cards, tenant = heapq.heappop(running)
            rec = records[seq - 1]
            if rec is None:
                continue  # its lease was lost: its cards came free then
            heard_s = watched.silent_until(pool_id, end) if watched is not None else None
            if heard_s is not None:  # its gateway is silent: its report waits for it
                records[seq - 1] = replace(rec, end_s=heard_s)
                heapq.heappush(running, (heard_s, seq, pool_id, cards, tenant))
                continue
            free[pool_id] += cards
            held[tenant] -= cards
            del live[rec.job.job_id]
            if watched is not None:
                watched.ended(rec.job.job_id)
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
        if watched is not None and next_check < len(checks) and checks[next_check] <= now:
            next_check += 1
            check = watched.check(now)
            lost_leases += len(check.requeued) + len(check.failed)
            pending.extend(stop(j) for j in check.requeued)
            pending.sort(key=lambda j: order[j.job_id])
            for job_id in check.failed:
                failed.append(stop(job_id))
                if progress is not None:
                    progress(1)
            for job, pool in check.started:
                start(now, job, pool)
            if check.started:
                begun = {job.job_id for job, _ in check.started}
                pending = [j for j in pending if j.job_id not in begun]
        ready = _fits_now(pending, topology, free)
        if not ready:
            continue
        rounds += 1
        started: set[str] = set()
        for job, pool in placer.place(now, ready, dict(free), dict(held)):
            start(now, job, pool)
            started.add(job.job_id)
        if started:
            pending = [j for j in pending if j.job_id not in started]
    done = [r for r in records if r is not None]
    return SimResult(placer.name, topology, done, unplaceable, rounds, failed, lost_leases)


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
