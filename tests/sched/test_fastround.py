"""The compiled round (sched/fastround.py + kernel.py) decides exactly as the reference round
(sched/batch.py): same pools, variants, scores, estimates, reasons and order, on seeded
random inputs that exercise every policy, variants, tenants with weights, usage and quotas,
priorities, ties in submission order, partly busy and unhealthy pools, pins and shapes that
fit nowhere."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sched_helpers import gpu_pool

from computenet.model.pool import Capacity, PoolHealth, PoolSpec, Region, Software
from computenet.model.task import Policy, TaskSpec
from computenet.sched import batch, fastround
from computenet.sched.core import (
    Context,
    PoolTelemetry,
    PoolView,
    Reservation,
    RunningTask,
    TaskView,
    TenantShare,
    schedule,
    shape_key,
)
from computenet.sched.pooltable import build_table

MODELS = [
    ("nvidia", "nvidia-v100-sxm2-32g", 32),
    ("nvidia", "nvidia-a100-sxm-80g", 80),
    ("huawei", "huawei-ascend-910b3", 64),
    ("acme", "acme-x1", 16),  # no catalog figure: speed unknown
]
REGIONS = ["11", "31", "44", "51", "15", "52"]
TENANTS = ["", "a", "b", "c"]


def _pools(rng: random.Random, n: int) -> list[PoolView]:
    out = []
    for i in range(n):
        region = rng.choice(REGIONS)
        if rng.random() < 0.2:  # a CPU pool
            spec = PoolSpec(
                label=f"c{i}",
                cpu_cores=rng.choice([8, 64]),
                memory_mib=rng.choice([16, 256]) * 1024,
                machines=rng.randint(1, 3),
                region=Region(code=region),
                price_per_core_hour=Decimal(str(rng.choice(["0.05", "0.08"]))),
            )
            busy = rng.randint(0, spec.total().cpu_cores // 2)
            free = Capacity(
                cpu_cores=spec.total().cpu_cores - busy,
                memory_mib=spec.total().memory_mib,
                accelerators=0,
            )
            health = PoolHealth.HEALTHY if rng.random() < 0.9 else PoolHealth.UNHEALTHY
            out.append(PoolView(f"cn.{region}/c/c{i}", spec, health, free))
            continue
        vendor, model, mem = rng.choice(MODELS)
        cards = rng.choice([1, 4, 8])
        view = gpu_pool(
            f"cn.{region}/g/g{i}",
            model,
            # equal prices are common: ties must resolve the same way
            price=rng.choice(["5", "5", "8", "12.5"]),
            region=region,
            vendor=vendor,
            cards=cards,
            machines=rng.randint(1, 4),
            memory_gib=mem,
            free_cards=rng.randint(0, cards),
            software=Software(cuda=rng.choice(["11.8", "12.4"])),
            labels={"tier": rng.choice(["gold", "silver"])},
        )
        if rng.random() < 0.1:
            view = replace(view, health=PoolHealth.UNHEALTHY)
        out.append(view)
    return out


def _spec(rng: random.Random, pools: list[PoolView]) -> TaskSpec:
    res: dict[str, Any] = {"cpu_cores": rng.choice([1, 4, 16]), "ram_gb": rng.choice([2, 32])}
    if rng.random() < 0.75:
        acc: dict[str, Any] = {"count": rng.choice([1, 1, 2, 4, 8])}
        if rng.random() < 0.6:
            acc["model"] = rng.choice(["V100", "A100", "910B", "acme-x1", "H100"])
        res["accelerator"] = acc
    place: dict[str, Any] = {
        "policy": rng.choice([p.value for p in Policy]),
        "runtime_hint_s": rng.choice([None, 600, 36000]),
    }
    if rng.random() < 0.2:
        place["regions"] = rng.sample(REGIONS, 2)
    if rng.random() < 0.15:
        place["max_price_per_card_hour"] = "6"
    if rng.random() < 0.1:
        place["labels"] = {"tier": "gold"}
    if rng.random() < 0.05:
        place["pool"] = rng.choice(pools).cpi
    if rng.random() < 0.15:
        res["software"] = {"cuda": "12.2"}
    if rng.random() < 0.15:
        res["time_limit_s"] = rng.choice([600, 7200])
    variants = []
    if rng.random() < 0.2:
        variants = [
            {"accelerator": {"count": rng.choice([1, 2]), "model": "V100"}},
            {"accelerator": {"count": 1, "model": "910B"}, "runtime_hint_s": 900},
        ]
    return TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "resources": res,
            "placement": place,
            "variants": variants,
        }
    )


def _tasks(rng: random.Random, pools: list[PoolView], n: int, shapes: int) -> list[TaskView]:
    specs = [_spec(rng, pools) for _ in range(shapes)]
    return [
        TaskView(
            f"t{i}",
            rng.choice(specs),
            rng.choice([0, 0, 0, 3, -1]),
            rng.randint(0, n // 2),  # repeated seqs: ties broken by tenant, then input order
            rng.choice(TENANTS),
            None,
        )
        for i in range(n)
    ]


def _context(rng: random.Random, pools: list[PoolView]) -> Context:
    tenants = {
        name: TenantShare(
            weight=rng.choice([0.5, 1.0, 3.0]),
            usage=rng.choice([0.0, 2.0, 10.0]),
            quota=rng.choice([None, None, 4.0, 20.0]),
        )
        for name in TENANTS[:3]
    }
    telemetry = {
        p.cpi: PoolTelemetry(rng.uniform(0, 600), rng.uniform(0.5, 1.0)) for p in pools[::3]
    }
    # running work that may not be preempted keeps the fast path
    running = [RunningTask("r1", pools[0].cpi, Capacity(cpu_cores=1), False)]
    return Context(telemetry=telemetry, tenants=tenants, running=running)


@pytest.mark.parametrize("seed", range(12))
def test_the_compiled_round_decides_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    pools = _pools(rng, rng.randint(5, 120))
    tasks = _tasks(rng, pools, rng.randint(1, 600), rng.randint(1, 25))
    ctx = _context(rng, pools)
    policy = rng.choice([None, None, Policy.CHEAPEST, Policy.BALANCED])
    table = build_table(pools, ctx)
    assert fastround.covered(table, ctx)
    expected = batch.schedule(tasks, table, ctx, policy)
    got = fastround.compiled_round(tasks, table, ctx, policy)
    assert got == expected
    assert {d.pool is not None for d in got} == {True, False} or len(tasks) < 50
    # the shape keys a caller caches give the same decisions
    keyed = [replace(tv, shape=shape_key(tv.spec)) for tv in tasks]
    assert fastround.compiled_round(keyed, table, ctx, policy) == expected


def test_a_large_round_decides_as_the_reference() -> None:
    """Pools fill up and heaps are re-scored many times: thousands of tasks on few pools."""
    rng = random.Random(99)
    pools = _pools(rng, 300)
    tasks = _tasks(rng, pools, 5000, 40)
    ctx = _context(rng, pools)
    table = build_table(pools, ctx)
    expected = batch.schedule(tasks, table, ctx)
    assert fastround.compiled_round(tasks, table, ctx) == expected
    assert sum(1 for d in expected if d.pool) > 500


def test_the_columns_say_what_the_decisions_say() -> None:
    rng = random.Random(7)
    pools = _pools(rng, 60)
    tasks = _tasks(rng, pools, 400, 10)
    ctx = _context(rng, pools)
    table = build_table(pools, ctx)
    tb = fastround.TaskBatch.of(tasks)
    placed = fastround.place(tb, table, ctx)
    decisions = fastround.compiled_round(tasks, table, ctx)
    assert [tasks[x].task_id for x in placed.task.tolist()] == [d.task_id for d in decisions]
    assert placed.placed == sum(1 for d in decisions if d.pool)
    for d, status, pool in zip(decisions, placed.status, placed.pool, strict=True):
        assert (status == fastround.PLACED) == (d.pool is not None)
        assert (table.cpis[pool] if pool >= 0 else None) == d.pool
    # the table's free capacity is the caller's: a round does not consume it
    assert np.array_equal(table.free_cards, build_table(pools, ctx).free_cards)


def test_reservations_and_preemptible_work_take_the_reference_round() -> None:
    pools = [gpu_pool("cn.51/p/a", cards=8), gpu_pool("cn.51/p/b", cards=8, free_cards=0)]
    table = build_table(pools, Context())
    held = Context(reservations=[Reservation("r", "cn.51/p/a", "x", 4, -60, 3600)])
    spot = Context(
        running=[RunningTask("s", "cn.51/p/b", Capacity(accelerators=8), True, priority=-1)]
    )
    assert fastround.covered(table, Context())
    assert not fastround.covered(table, held)
    assert not fastround.covered(table, spot)
    spec = TaskSpec.model_validate(
        {"executors": [{"command": ["true"]}], "resources": {"accelerator": {"count": 8}}}
    )
    tasks = [TaskView("t1", spec), TaskView("t2", spec)]
    [first, second] = schedule(tasks, table, spot)
    assert first.pool == "cn.51/p/a"
    assert (second.pool, second.preempt) == ("cn.51/p/b", ("s",))
    assert schedule(tasks, table, spot) == batch.schedule(tasks, table, spot)


def test_large_rounds_run_compiled_and_small_ones_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    pools = _pools(rng, 40)
    tasks = _tasks(rng, pools, 300, 8)
    table = build_table(pools, Context())
    compiled: list[int] = []
    place = fastround.place

    def spy(tb: fastround.TaskBatch, *args: Any) -> fastround.Placements:
        compiled.append(len(tb))
        return place(tb, *args)

    monkeypatch.setattr(fastround, "place", spy)
    small = schedule(tasks, table)
    assert compiled == []
    monkeypatch.setattr(fastround, "COMPILED_FROM_TASKS", 300)
    assert schedule(tasks, table) == small
    assert compiled == [300]


def test_an_empty_round() -> None:
    table = build_table([gpu_pool("cn.51/p/a")], Context())
    assert schedule([], table) == []
    assert fastround.compiled_round([], table, Context()) == []
    tb = fastround.TaskBatch.of([])
    assert fastround.place(tb, table, Context()).placed == 0
