"""Summary numbers and tables of national-scale runs (definitions in docs/simulator.md)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from computenet.sim.machines import MILLI
from computenet.sim.national import Federation
from computenet.sim.scale_engine import ScaleResult
from computenet.sim.tasks import Tasks, speed_ratio

REFERENCE = "cheapest-first"
BUSY = 0.7  # a pool counts as busy at this utilization or more


@dataclass(frozen=True)
class ScaleSummary:
    """The comparison row for one policy at national scale."""

    policy: str
    jobs: int
    unplaceable: int
    mean_jct_h: float
    p95_jct_h: float
    mean_wait_h: float
    p95_wait_h: float
    cost: Decimal  # currency units, summed in float64 and shown to the unit
    carbon_t: float
    utilization: float  # busy card-time / (all cards x arrival window)
    busy_pools: float  # share of pools at least BUSY utilized over the arrival window
    forwarded: int  # tasks placed on a pool another node owns
    stale_misses: int  # forwards the owner refused because the index was stale
    waited: int  # times a task joined a queue
    index_age_mean_s: float
    index_age_max_s: float
    unknown_speed: int  # tasks that ran on a card without a speed figure (declared time)
    events: int


def summarize_scale(fed: Federation, tasks: Tasks, r: ScaleResult) -> ScaleSummary:
    """Summary numbers of one run; time and cost over the tasks that ran."""
    ran = r.pool >= 0
    pool = r.pool[ran]
    arrival = tasks.arrival_s[ran]
    start, end = r.start_s[ran], r.end_s[ran]
    cards = tasks.share[ran] / MILLI
    held_h = (end - start) / 3600
    jct, wait = end - arrival, start - arrival
    t0, stop = float(tasks.arrival_s[0]), float(tasks.arrival_s[-1])
    window = max(stop - t0, 1e-9)
    busy = np.clip(np.minimum(end, stop) - np.maximum(start, t0), 0, None) * cards
    per_pool = np.bincount(pool, weights=busy, minlength=len(fed)) / (fed.cards * window)
    energy_kwh = fed.power_w[pool] / 1000 * cards * held_h * fed.pue[pool]
    _, known = speed_ratio(fed)
    cost = float((fed.price_fen[pool] * cards * held_h).sum()) / 100
    age = r.staleness_s if len(r.staleness_s) else np.zeros(1)
    return ScaleSummary(
        policy=r.policy,
        jobs=int(ran.sum()),
        unplaceable=int((~ran).sum()),
        mean_jct_h=float(jct.mean()) / 3600 if len(jct) else math.nan,
        p95_jct_h=float(np.percentile(jct, 95)) / 3600 if len(jct) else math.nan,
        mean_wait_h=float(wait.mean()) / 3600 if len(wait) else math.nan,
        p95_wait_h=float(np.percentile(wait, 95)) / 3600 if len(wait) else math.nan,
        cost=Decimal(round(cost)),
        carbon_t=float((energy_kwh * fed.carbon[pool]).sum()) / 1e6,
        utilization=float(busy.sum()) / (float(fed.cards.sum()) * window),
        busy_pools=float((per_pool >= BUSY).mean()),
        forwarded=int(r.forwarded.sum()),
        stale_misses=r.stale_misses,
        waited=r.waited,
        index_age_mean_s=float(age.mean()),
        index_age_max_s=float(age.max()),
        unknown_speed=int((~known[pool]).sum()),
        events=r.events,
    )


COLUMNS = (
    "policy",
    "jobs",
    "mean JCT h",
    "p95 JCT h",
    "mean wait h",
    "p95 wait h",
    "cost",
    "carbon t",
    "util %",
    "pools >=70% %",
    "forwarded",
    "stale misses",
    "index age s (mean/max)",
    f"JCT vs {REFERENCE}",
    f"cost vs {REFERENCE}",
)


def _delta(value: float, ref: float | None) -> str:
    return "" if not ref else f"{(value / ref - 1) * 100:+.1f}%"


def rows(summaries: list[ScaleSummary]) -> list[list[str]]:
    """One formatted row per policy, in COLUMNS order."""
    ref = next((s for s in summaries if s.policy == REFERENCE), None)
    return [
        [
            s.policy,
            str(s.jobs),
            f"{s.mean_jct_h:.3f}",
            f"{s.p95_jct_h:.3f}",
            f"{s.mean_wait_h:.3f}",
            f"{s.p95_wait_h:.3f}",
            str(s.cost),
            f"{s.carbon_t:.1f}",
            f"{s.utilization * 100:.1f}",
            f"{s.busy_pools * 100:.1f}",
            str(s.forwarded),
            str(s.stale_misses),
            f"{s.index_age_mean_s:.2f}/{s.index_age_max_s:.2f}",
            _delta(s.mean_jct_h, ref.mean_jct_h if ref else None),
            _delta(float(s.cost), float(ref.cost) if ref else None),
        ]
        for s in summaries
    ]


def text(summaries: list[ScaleSummary]) -> str:
    """The table as aligned plain text."""
    table = [list(COLUMNS), *rows(summaries)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table)


def write_scale(
    out: Path, summaries: list[ScaleSummary], facts: Mapping[str, object]
) -> list[Path]:
    """Write summary.txt, summary.md, summary.csv and national.json (every number, plus
    ``facts`` about the run: topology size, index delay, wall time, memory)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.txt", out / "summary.md", out / "summary.csv", out / "national.json"]
    paths[0].write_text(text(summaries) + "\n")
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r) + " |" for r in rows(summaries)]
    paths[1].write_text("\n".join(md) + "\n")
    with paths[2].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows(summaries))
    body = {"run": dict(facts), "policies": [asdict(s) for s in summaries]}
    paths[3].write_text(json.dumps(body, indent=2, default=str) + "\n")
    return paths
