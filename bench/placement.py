"""Placement benchmark for the pure scheduler core (no I/O, one process).

1. Discovery: ``rank_offers`` latency p50/p99 over ``--find-pools`` (30,000) pools, the pool
   table built once beforehand (as the node caches it), ``--queries`` mixed templates.
2. Batch: one round placing ``--tasks`` (100,000) pending tasks of mixed shapes on
   ``--pools`` (10,000) pools, placements per second through each way in: the columnar core
   (``fastround.place``, no object per task), ``schedule`` with shape keys cached (the node's
   path) and computed in the round, and the reference round (``sched/batch.py``, the previous
   core); then where a round's time goes, stage by stage.
3. The same round with ``--reservations`` (500) advance reservations on random card pools,
   for random tenants, half under way and half starting later: what honouring them costs
   (such rounds run the reference round).

Synthetic pools and tasks come from a seeded generator: accelerator models from the catalog,
provinces from the scheduler's region table, prices, software versions and labels.
Usage: ``.venv/bin/python bench/placement.py [--json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from computenet.model.pool import Accelerator, PoolHealth, PoolSpec, Region, Software
from computenet.model.task import TaskSpec
from computenet.sched import batch, fastround
from computenet.sched.core import (
    Context,
    PoolTelemetry,
    PoolView,
    Reservation,
    TaskView,
    rank_offers,
    schedule,
    shape_key,
)
from computenet.sched.network import provinces
from computenet.sched.pooltable import PoolTable, build_table

MODELS = [  # (vendor, catalog model, memory GiB, price per card-hour)
    ("nvidia", "nvidia-v100-sxm2-32g", 32, 6),
    ("nvidia", "nvidia-a100-sxm-80g", 80, 15),
    ("nvidia", "nvidia-h100-sxm", 80, 30),
    ("nvidia", "nvidia-l40s", 48, 10),
    ("huawei", "huawei-ascend-910b3", 64, 12),
    ("cambricon", "cambricon-mlu590", 80, 9),
    ("hygon", "hygon-k100-ai", 64, 8),
]
FAMILIES = ["V100", "A100", "H100", "L40S", "910B", None]


def make_pools(n: int, rng: random.Random) -> list[PoolView]:
    """``n`` pools: 90% accelerator pools of 1-16 machines x 8 cards, 10% CPU pools."""
    codes = [c for c in provinces().codes if c not in ("71", "81", "82")]
    out = []
    for i in range(n):
        region = Region(code=rng.choice(codes))
        if rng.random() < 0.9:
            vendor, model, mem, price = rng.choice(MODELS)
            acc = Accelerator(vendor=vendor, model=model, memory_mib=mem * 1024, count=8)
            price_card = Decimal(str(round(price * rng.uniform(0.7, 1.3), 2)))
        else:
            acc, price_card = None, Decimal(0)
        spec = PoolSpec(
            label=f"p{i}",
            cpu_cores=64,
            memory_mib=512 * 1024,
            machines=rng.randint(1, 16),
            accelerator=acc,
            region=region,
            price_per_card_hour=price_card,
            price_per_core_hour=Decimal("0.05"),
            software=Software(
                driver=rng.choice(["525.60", "535.104", "550.54"]),
                cuda=rng.choice(["11.8", "12.2", "12.4"]),
                container_runtimes=rng.sample(["docker", "apptainer", "podman"], 2),
            ),
            labels={"tier": rng.choice(["gold", "silver"])},
        )
        out.append(
            PoolView(f"cn.{region.code}/prov{i % 500}/p{i}", spec, PoolHealth.HEALTHY, spec.total())
        )
    return out


def make_template(rng: random.Random) -> dict[str, Any]:
    """One task shape: accelerator family and count, sometimes region, price, software."""
    res: dict[str, Any] = {"cpu_cores": rng.choice([1, 4, 16]), "ram_gb": rng.choice([4, 32])}
    fam = rng.choice(FAMILIES)
    if fam is not None or rng.random() < 0.5:
        res["accelerator"] = {"count": rng.choice([1, 2, 4, 8]), "model": fam}
        if rng.random() < 0.3:
            res["accelerator"]["min_memory_gib"] = 64
    place: dict[str, Any] = {
        "policy": rng.choice(["balanced", "cheapest", "fastest", "greenest", "nearest"]),
        "runtime_hint_s": rng.choice([600, 3600, 36000]),
    }
    if rng.random() < 0.3:
        place["regions"] = rng.sample(["11", "31", "44", "51", "15", "52"], 2)
    if rng.random() < 0.2:
        place["max_price_per_card_hour"] = "20"
    if rng.random() < 0.2:
        res["software"] = {"cuda": "12.2"}
    return {"executors": [{"command": ["true"]}], "resources": res, "placement": place}


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of ``xs`` (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_find(n_pools: int, queries: int, rng: random.Random) -> dict[str, float]:
    pools = make_pools(n_pools, rng)
    ctx = Context(
        telemetry={
            p.cpi: PoolTelemetry(rng.uniform(0, 600), rng.uniform(0.9, 1)) for p in pools[::7]
        }
    )
    t0 = time.perf_counter()
    table = build_table(pools, ctx)
    build_s = time.perf_counter() - t0
    templates = [TaskSpec.model_validate(make_template(rng)) for _ in range(queries)]
    lat = []
    for spec in templates:
        t0 = time.perf_counter()
        rank_offers(spec, table, ctx, limit=20)
        lat.append((time.perf_counter() - t0) * 1000)
    return {
        "pools": n_pools,
        "queries": queries,
        "table_build_s": build_s,
        "find_p50_ms": pct(lat, 0.5),
        "find_p99_ms": pct(lat, 0.99),
        "find_max_ms": max(lat),
    }


def make_reservations(
    pools: list[PoolView], tenants: list[str], n: int, rng: random.Random
) -> list[Reservation]:
    """``n`` reservations of up to half a pool's cards, half under way, half later."""
    gpu = [p for p in pools if p.spec.accelerator is not None]
    out = []
    for k in range(n):
        p = rng.choice(gpu)
        cards = rng.randint(1, max(1, p.free.accelerators // 2))
        start = rng.uniform(-3600, 0) if k % 2 else rng.uniform(60, 7200)
        end = start + rng.uniform(3600, 4 * 3600)
        out.append(Reservation(f"rsv-{k}", p.cpi, rng.choice(tenants), cards, start, end))
    return out


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``: on a shared machine the CPU time is the steadier."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_round(
    n_pools: int, n_tasks: int, shapes: int, repeat: int, n_reserved: int, rng: random.Random
) -> dict[str, Any]:
    pools = make_pools(n_pools, rng)
    ctx = Context()
    specs = [TaskSpec.model_validate(make_template(rng)) for _ in range(shapes)]
    tenants = [f"tenant{i}" for i in range(10)]
    # every task its own spec object, as the node parses them: no sharing to exploit
    tasks = [
        TaskView(
            f"t{i}",
            rng.choice(specs).model_copy(deep=True),
            rng.choice([0, 0, 0, 5]),
            i,
            rng.choice(tenants),
        )
        for i in range(n_tasks)
    ]
    t0 = time.perf_counter()
    table = build_table(pools, ctx)
    build_s = time.perf_counter() - t0
    load_s = fastround.warm_up()  # import Numba, load the compiled loop (compile if not cached)
    t0 = time.perf_counter()
    placed = sum(1 for d in schedule(tasks, table, ctx) if d.pool)  # warm-up round
    first_s = time.perf_counter() - t0
    # as the node does: shape keys computed once when a task's spec is first parsed
    keyed = [replace(tv, shape=shape_key(tv.spec)) for tv in tasks]
    rctx = Context(reservations=make_reservations(pools, tenants, n_reserved, rng))
    placed_reserved = sum(1 for d in schedule(keyed, table, rctx) if d.pool)
    placed_columns = fastround.place(fastround.TaskBatch.of(keyed), table, ctx).placed
    placed_reference = sum(1 for d in batch.schedule(keyed, table, ctx) if d.pool)
    rounds: dict[str, Callable[[], object]] = {
        "columns": lambda: fastround.place(fastround.TaskBatch.of(keyed), table, ctx),
        "keyed": lambda: schedule(keyed, table, ctx),
        "plain": lambda: schedule(tasks, table, ctx),
        "reserved": lambda: schedule(keyed, table, rctx),
        "reference": lambda: batch.schedule(keyed, table, ctx),
    }
    times: dict[str, list[float]] = {name: [] for name in rounds}
    cpu: dict[str, list[float]] = {name: [] for name in rounds}
    for _ in range(repeat):  # alternate, so all see the same (shared-machine) load
        for name, run in rounds.items():
            wall_s, cpu_s = _timed(run)
            times[name].append(wall_s)
            cpu[name].append(cpu_s)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    return {
        "pools": n_pools,
        "tasks": n_tasks,
        "shapes": shapes,
        "placed": placed,
        "table_build_s": build_s,
        "loop_load_s": load_s,
        "first_round_s": first_s,
        "repeat": repeat,
        "round_columns_s": med["columns"],
        "round_columns_best_s": min(times["columns"]),
        "placements_per_s_columns": placed_columns / med["columns"],
        "placements_per_cpu_s_columns": placed_columns / med_cpu["columns"],
        "placements_per_cpu_s_cached_keys": placed / med_cpu["keyed"],
        "placements_per_cpu_s": placed / med_cpu["plain"],
        "placements_per_cpu_s_reference": placed_reference / med_cpu["reference"],
        "round_cached_keys_s": med["keyed"],
        "placements_per_s_cached_keys": placed / med["keyed"],
        "round_s": med["plain"],
        "round_best_s": min(times["plain"]),
        "placements_per_s": placed / med["plain"],
        "decisions_per_s": n_tasks / med["plain"],
        "reservations": n_reserved,
        "placed_with_reservations": placed_reserved,
        "round_reserved_s": med["reserved"],
        "placements_per_s_reserved": placed_reserved / med["reserved"],
        "placed_reference": placed_reference,
        "round_reference_s": med["reference"],
        "placements_per_s_reference": placed_reference / med["reference"],
        "stages": stages(keyed, table, ctx, repeat),
    }


def stages(tasks: list[TaskView], table: PoolTable, ctx: Context, repeat: int) -> dict[str, float]:
    """Median seconds of each stage of a cached-key round (shape keys cached as the node's
    placer caches them)."""
    out: dict[str, list[float]] = {"group": [], "score": [], "loop": [], "decisions": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        tb = fastround.TaskBatch.of(tasks)
        t1 = time.perf_counter()
        placed = fastround.place(tb, table, ctx)
        t2 = time.perf_counter()
        gc.disable()  # as schedule() does
        try:
            fastround.decisions(tasks, tb, placed, table)
        finally:
            gc.enable()
        t3 = time.perf_counter()
        out["group"].append(t1 - t0)
        out["score"].append(t2 - t1 - placed.loop_s)
        out["loop"].append(placed.loop_s)
        out["decisions"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in out.items()}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--find-pools", type=int, default=30_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--pools", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--shapes", type=int, default=200, help="distinct task shapes")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (median reported)")
    ap.add_argument("--reservations", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    find = bench_find(args.find_pools, args.queries, rng)
    rnd = bench_round(args.pools, args.tasks, args.shapes, args.repeat, args.reservations, rng)
    if args.json:
        print(json.dumps({"find": find, "round": rnd}))
        return
    print(
        f"find over {find['pools']:,} pools ({find['queries']} templates, table built once in "
        f"{find['table_build_s']:.2f} s): p50 {find['find_p50_ms']:.1f} ms, "
        f"p99 {find['find_p99_ms']:.1f} ms, max {find['find_max_ms']:.1f} ms"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {_load()}")
    print(
        f"round: {rnd['tasks']:,} tasks ({rnd['shapes']} shapes, 10 tenants) on "
        f"{rnd['pools']:,} pools, {rnd['placed']:,} placed; pool table build "
        f"{rnd['table_build_s']:.2f} s (cached between rounds); loading the compiled loop "
        f"{rnd['loop_load_s']:.2f} s (once per process; compiling it, once per install, takes "
        f"longer); first round {rnd['first_round_s']:.2f} s; medians of {rnd['repeat']}:"
    )
    print(
        f"  columns (TaskBatch from cached shape keys -> Placements, no object per task): "
        f"{rnd['round_columns_s']:.2f} s (best {rnd['round_columns_best_s']:.2f} s) = "
        f"{rnd['placements_per_s_columns']:,.0f} placements/s "
        f"({rnd['placements_per_cpu_s_columns']:,.0f} per CPU second)"
    )
    print(
        f"  schedule(), shape keys cached per task (as the node caches them), Decision objects: "
        f"{rnd['round_cached_keys_s']:.2f} s = {rnd['placements_per_s_cached_keys']:,.0f} "
        f"placements/s ({rnd['placements_per_cpu_s_cached_keys']:,.0f} per CPU second)"
    )
    print(
        f"  schedule(), shape keys computed in the round: {rnd['round_s']:.2f} s "
        f"(best {rnd['round_best_s']:.2f} s) = {rnd['placements_per_s']:,.0f} placements/s "
        f"({rnd['decisions_per_s']:,.0f} decisions/s; "
        f"{rnd['placements_per_cpu_s']:,.0f} placements per CPU second)"
    )
    print(
        f"  schedule() honouring {rnd['reservations']} advance reservations (reference round): "
        f"{rnd['placed_with_reservations']:,} placed in {rnd['round_reserved_s']:.2f} s = "
        f"{rnd['placements_per_s_reserved']:,.0f} placements/s"
    )
    print(
        f"  reference round (sched/batch.py, the previous core), cached keys: "
        f"{rnd['placed_reference']:,} placed in {rnd['round_reference_s']:.2f} s = "
        f"{rnd['placements_per_s_reference']:,.0f} placements/s "
        f"({rnd['placements_per_cpu_s_reference']:,.0f} per CPU second)"
    )
    st = rnd["stages"]
    print(
        "where a cached-key round's time goes (medians): grouping tasks by shape "
        f"{st['group']:.3f} s, scoring shapes over the pool table {st['score']:.3f} s, "
        f"the compiled loop {st['loop']:.3f} s, building Decision objects {st['decisions']:.3f} s"
    )


if __name__ == "__main__":
    main()
