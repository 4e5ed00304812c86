"""Baselines behave as named; the core adapter hands every choice to the live core."""

from __future__ import annotations

import pytest

from computenet.errors import InvalidInput
from computenet.sim.baselines import (
    cheapest_first,
    first_fit,
    least_loaded,
    random_placer,
    round_robin,
)
from computenet.sim.core_adapter import CorePlacer
from computenet.sim.topology import Topology
from computenet.sim.trace import Job
from simpools import pool

MODELS = {"m": 100.0}


@pytest.fixture
def three() -> Topology:
    """Three pools of one model: mid price and 4 cards, cheap and 8, dear and 2."""
    return Topology(
        pools=(
            pool("cn.31/p/mid", "m", 4, "2"),
            pool("cn.31/p/cheap", "m", 8, "1"),
            pool("cn.31/p/dear", "m", 2, "3"),
        )
    )


def one(job_id: str, cards: int = 1) -> Job:
    return Job(job_id, "t", 0, cards, dict(MODELS))


def chosen(placer: object, free: dict[str, int], jobs: list[Job]) -> list[str]:
    return [p.pool_id.rsplit("/", 1)[1] for _, p in placer.place(0, jobs, free, {})]  # type: ignore[attr-defined]


FULL = {"cn.31/p/mid": 4, "cn.31/p/cheap": 8, "cn.31/p/dear": 2}


def test_cheapest_first_takes_lowest_price_with_room(three: Topology) -> None:
    assert chosen(cheapest_first(three), FULL, [one("a")]) == ["cheap"]
    busy = {**FULL, "cn.31/p/cheap": 0}
    assert chosen(cheapest_first(three), busy, [one("a"), one("b", 3), one("c")]) == [
        "mid",
        "mid",
        "dear",
    ]


def test_least_loaded_takes_largest_free_fraction(three: Topology) -> None:
    free = {"cn.31/p/mid": 3, "cn.31/p/cheap": 4, "cn.31/p/dear": 2}  # 75%, 50%, 100%
    assert chosen(least_loaded(three), free, [one("a")]) == ["dear"]
    # after the first job the dear pool is at 50%, the mid pool at 75% wins
    assert chosen(least_loaded(three), free, [one("a"), one("b")]) == ["dear", "mid"]


def test_first_fit_takes_first_pool_in_order_that_admits(three: Topology) -> None:
    assert chosen(first_fit(three), FULL, [one("a"), one("b", 8), one("c", 3)]) == [
        "mid",
        "cheap",
        "mid",
    ]


def test_round_robin_cycles(three: Topology) -> None:
    placer = round_robin(three)
    jobs = [one(str(i)) for i in range(4)]
    assert chosen(placer, FULL, jobs) == ["mid", "cheap", "dear", "mid"]
    # it remembers its place between rounds, and skips pools without room
    assert chosen(placer, {**FULL, "cn.31/p/dear": 0}, [one("x")]) == ["cheap"]


def test_random_is_seeded_and_spreads(three: Topology) -> None:
    jobs = [one(str(i)) for i in range(12)]
    first = chosen(random_placer(three, seed=4), FULL, jobs)
    assert first == chosen(random_placer(three, seed=4), FULL, jobs)
    assert len(set(first)) > 1


def test_baselines_skip_jobs_that_do_not_fit_and_backfill(three: Topology) -> None:
    free = {"cn.31/p/mid": 1, "cn.31/p/cheap": 0, "cn.31/p/dear": 0}
    out = cheapest_first(three).place(0, [one("big", 4), one("small")], free, {})
    assert [(j.job_id, p.pool_id) for j, p in out] == [("small", "cn.31/p/mid")]


def test_core_cheapest_policy_picks_lowest_price(three: Topology) -> None:
    jobs = [one("a", 2)]
    assert chosen(CorePlacer("cheapest", three, jobs), FULL, jobs) == ["cheap"]


def test_core_respects_card_memory_and_model() -> None:
    small = pool("cn.31/p/small", "k", 8, "1", memory_gib=12)
    big = pool("cn.31/p/big", "v", 8, "5", memory_gib=16)
    topo = Topology(pools=(small, big))
    jobs = [Job("needs-16", "t", 0, 1, {"k": 9.0, "v": 3.0}, min_memory_gib=13)]
    free = {"cn.31/p/small": 8, "cn.31/p/big": 8}
    assert chosen(CorePlacer("cheapest", topo, jobs), free, jobs) == ["big"]
    only_v = [Job("only-v", "t", 0, 1, {"v": 3.0})]
    assert chosen(CorePlacer("cheapest", topo, only_v), free, only_v) == ["big"]


def test_core_adapter_refuses_what_constraints_cannot_say() -> None:
    topo = Topology(
        pools=(
            pool("cn.31/p/a", "a", 1, "1"),
            pool("cn.31/p/b", "b", 1, "1"),
            pool("cn.31/p/c", "c", 1, "1"),
        )
    )
    jobs = [Job("ab", "t", 0, 1, {"a": 1.0, "b": 1.0})]
    with pytest.raises(InvalidInput, match="neither one model nor a minimum card memory"):
        CorePlacer("balanced", topo, jobs)


def test_core_policies_use_the_workload_speed_table() -> None:
    k80 = pool("cn.31/p/k80", "nvidia-k80", 8, "2.90", memory_gib=12)
    v100 = pool("cn.31/p/v100", "nvidia-v100-sxm2-16g", 8, "16.10")
    topo = Topology(pools=(k80, v100))
    free = {"cn.31/p/k80": 8, "cn.31/p/v100": 8}
    # A3C runs about 2.1x faster on a V100 (Gavel): V100 is faster but dearer per job
    # (16.10 / 2.1 > 2.90); CycleGAN runs 8.8x faster, so the V100 is also cheaper per job.
    a3c = [
        Job(
            "a3c", "t", 0, 1, {"nvidia-k80": 2087.0, "nvidia-v100-sxm2-16g": 1000.0}, workload="A3C"
        )
    ]
    gan = [
        Job(
            "gan",
            "t",
            0,
            1,
            {"nvidia-k80": 8769.0, "nvidia-v100-sxm2-16g": 1000.0},
            workload="CycleGAN",
        )
    ]
    assert chosen(CorePlacer("fastest", topo, a3c), free, a3c) == ["v100"]
    assert chosen(CorePlacer("cheapest", topo, a3c), free, a3c) == ["k80"]
    assert chosen(CorePlacer("cheapest", topo, gan), free, gan) == ["v100"]
