"""Summary numbers of one simulated run, defined in docs/simulator.md."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from computenet.sim.engine import SimResult, lower_bound_s


@dataclass(frozen=True)
class Summary:
    """The comparison row for one policy."""

    policy: str
    jobs: int
    unplaceable: int
    mean_jct_h: float
    p95_jct_h: float
    mean_wait_h: float
    p95_wait_h: float
    cost: Decimal  # currency units (CNY in the default topology), exact
    carbon_t: float
    utilization: float  # busy card-time / (all cards x arrival window)
    jain_fairness: float
    jct_over_lower_bound: float
    makespan_h: float
    pool_utilization: dict[str, float]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); 1 when all equal, 1/n at worst."""
    if not values:
        return math.nan
    square_sum = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * square_sum) if square_sum else 1.0


def summarize(result: SimResult) -> Summary:
    """Summary numbers of ``result``; every metric is over the jobs that ran."""
    recs = result.records
    topo = result.topology
    hour = 3600.0
    if not recs:
        nan = math.nan
        zero = {p.pool_id: 0.0 for p in topo.pools}
        return Summary(
            result.policy,
            0,
            len(result.unplaceable),
            nan,
            nan,
            nan,
            nan,
            Decimal(0),
            0.0,
            0.0,
            nan,
            nan,
            0.0,
            zero,
        )
    jcts = [r.jct_s for r in recs]
    waits = [r.wait_s for r in recs]
    bounds = {r.job.job_id: lower_bound_s(r.job, topo) for r in recs}
    start = min(r.job.arrival_s for r in recs)
    makespan = max(r.end_s for r in recs) - start
    # Utilization is measured while jobs keep arriving: after the last arrival a long tail
    # of a few big jobs would make any policy look idle.
    last = max(r.job.arrival_s for r in recs)
    stop = last if last > start else start + makespan
    busy: dict[str, float] = defaultdict(float)
    for r in recs:
        overlap = max(0.0, min(r.end_s, stop) - max(r.start_s, start))
        busy[r.pool.pool_id] += overlap * r.job.cards
    window = stop - start
    pool_util = {
        p.pool_id: busy[p.pool_id] / (p.cards * window) if window else 0.0 for p in topo.pools
    }
    all_cards = sum(p.cards for p in topo.pools)
    # Fairness: each tenant's mean speed (lower bound / JCT, 1 = as fast as alone), compared.
    speed: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        speed[r.job.tenant].append(bounds[r.job.job_id] / r.jct_s if r.jct_s else 1.0)
    return Summary(
        policy=result.policy,
        jobs=len(recs),
        unplaceable=len(result.unplaceable),
        mean_jct_h=statistics.fmean(jcts) / hour,
        p95_jct_h=percentile(jcts, 95) / hour,
        mean_wait_h=statistics.fmean(waits) / hour,
        p95_wait_h=percentile(waits, 95) / hour,
        cost=sum((r.cost for r in recs), Decimal(0)),
        carbon_t=sum(r.carbon_kg for r in recs) / 1000,
        utilization=sum(busy.values()) / (all_cards * window) if window else 0.0,
        jain_fairness=jain([statistics.fmean(v) for v in speed.values()]),
        jct_over_lower_bound=statistics.fmean(jcts) / statistics.fmean(bounds.values()),
        makespan_h=makespan / hour,
        pool_utilization=pool_util,
    )
