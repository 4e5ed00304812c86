"""The pure scheduler core: placement, capacity, ordering, policies and explanations."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from computenet.model.pool import Accelerator, Capacity, PoolHealth, PoolSpec, Region
from computenet.model.task import TaskSpec
from computenet.sched.core import Decision, PoolView, TaskView, hard_reject, schedule

A100 = Accelerator(vendor="nvidia", model="nvidia-a100-80g", memory_mib=80 * 1024, count=4)
ASCEND = Accelerator(vendor="huawei", model="huawei-ascend-910b", memory_mib=64 * 1024, count=8)


def pool(
    cpi: str,
    *,
    cores: int = 16,
    memory_mib: int = 65536,
    machines: int = 1,
    acc: Accelerator | None = None,
    region: str = "31",
    card_price: str = "0",
    core_price: str = "0",
    health: PoolHealth = PoolHealth.HEALTHY,
    free: Capacity | None = None,
) -> PoolView:
    spec = PoolSpec(
        label=cpi.rsplit("/", 1)[1],
        cpu_cores=cores,
        memory_mib=memory_mib,
        machines=machines,
        accelerator=acc,
        region=Region(code=region),
        price_per_card_hour=Decimal(card_price),
        price_per_core_hour=Decimal(core_price),
    )
    return PoolView(cpi, spec, health, spec.total() if free is None else free)


def task(
    tid: str,
    *,
    cores: int = 1,
    ram_gb: float = 1,
    acc: dict[str, Any] | None = None,
    priority: int = 0,
    seq: int = 0,
    **placement: Any,
) -> TaskView:
    resources: dict[str, Any] = {"cpu_cores": cores, "ram_gb": ram_gb}
    if acc is not None:
        resources["accelerator"] = acc
    spec = TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "resources": resources,
            "placement": {"priority": priority, **placement},
        }
    )
    return TaskView(tid, spec, priority, seq)


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.task_id: d for d in decisions}


# ---- basics ------------------------------------------------------------------------------


def test_places_on_a_fitting_pool() -> None:
    pools = [pool("cn/a/small", cores=2), pool("cn/a/big", cores=64)]
    [d] = schedule([task("t1", cores=8)], pools)
    assert (d.task_id, d.pool, d.reason) == ("t1", "cn/a/big", "")


def test_one_decision_per_task_and_none_for_no_tasks() -> None:
    assert schedule([], [pool("cn/a/p")]) == []
    tasks = [task(f"t{i}", seq=i) for i in range(5)]
    assert {d.task_id for d in schedule(tasks, [pool("cn/a/p")])} == {f"t{i}" for i in range(5)}


def test_schedule_is_pure_and_deterministic() -> None:
    pools = [pool("cn/a/p", cores=2), pool("cn/a/q", cores=4, core_price="1")]
    tasks = [task(f"t{i}", seq=i) for i in range(8)]
    before = (copy.deepcopy(pools), copy.deepcopy(tasks))
    first = schedule(tasks, pools)
    second = schedule(list(reversed(tasks)), pools)
    assert first == schedule(tasks, pools)
    assert by_id(first) == by_id(second)  # input order is irrelevant; seq decides
    assert (pools, tasks) == before  # inputs untouched (free capacity is copied)


def test_capacity_is_consumed_within_one_pass() -> None:
    pools = [pool("cn/a/p", cores=2)]
    decisions = schedule([task(f"t{i}", seq=i) for i in range(3)], pools)
    placed = [d for d in decisions if d.pool is not None]
    waiting = [d for d in decisions if d.pool is None]
    assert [d.task_id for d in placed] == ["t0", "t1"]
    assert [d.task_id for d in waiting] == ["t2"]
    assert "waiting for capacity" in waiting[0].reason
    assert "1 eligible pools" in waiting[0].reason


def test_memory_and_cards_are_consumed_too() -> None:
    # 2 GB tasks need 1908 MiB each: 3 fit in 6000 MiB, the fourth waits.
    pools = [pool("cn/a/p", cores=64, memory_mib=6000)]
    decisions = schedule([task(f"t{i}", ram_gb=2, seq=i) for i in range(4)], pools)
    assert [d.pool is not None for d in decisions] == [True, True, True, False]
    gpu = [pool("cn/a/g", acc=A100)]  # 4 cards
    two = {"vendor": "nvidia", "count": 2}
    decisions = schedule([task(f"g{i}", acc=two, seq=i) for i in range(3)], gpu)
    assert [d.pool is not None for d in decisions] == [True, True, False]


def test_free_capacity_is_respected() -> None:
    busy = pool("cn/a/p", cores=8, free=Capacity(cpu_cores=1, memory_mib=65536))
    [d] = schedule([task("t", cores=2)], [busy])
    assert d.pool is None and "waiting for capacity" in d.reason


def test_priority_first_then_fifo() -> None:
    pools = [pool("cn/a/p", cores=2)]
    tasks = [
        task("low-early", seq=1, priority=0),
        task("high-late", seq=5, priority=10),
        task("mid-late", seq=4, priority=5),
        task("mid-early", seq=3, priority=5),
    ]
    decisions = schedule(tasks, pools)
    # Decisions come out in scheduling order.
    assert [d.task_id for d in decisions] == ["high-late", "mid-early", "mid-late", "low-early"]
    placed = {d.task_id for d in decisions if d.pool}
    assert placed == {"high-late", "mid-early"}


def test_fifo_among_equals() -> None:
    pools = [pool("cn/a/p", cores=1)]
    decisions = schedule([task("b", seq=2), task("a", seq=1), task("c", seq=3)], pools)
    assert [(d.task_id, d.pool) for d in decisions] == [
        ("a", "cn/a/p"),
        ("b", None),
        ("c", None),
    ]


# ---- explanations ------------------------------------------------------------------------


def test_no_pools_registered() -> None:
    [d] = schedule([task("t")], [])
    assert d.pool is None
    assert d.reason == "no pools are registered"


def test_accelerator_count_explained() -> None:
    pools = [pool("cn/a/a100", acc=A100), pool("cn/a/cpu")]
    [d] = schedule(
        [task("t", acc={"vendor": "nvidia", "model": "nvidia-a100-80g", "count": 8})], pools
    )
    assert d.pool is None
    assert "no pool has 8 nvidia-a100-80g cards in one pool" in d.reason
    assert "nvidia-a100-80g" in d.reason


def test_accelerator_explanation_is_not_repeated() -> None:
    pools = [pool("cn/a/a100", acc=A100), pool("cn/a/cpu")]
    need = {"vendor": "nvidia", "model": "nvidia-a100-80g", "count": 8}
    [d] = schedule([task("t", acc=need)], pools)
    # One sentence for both kinds of misfit (no cards at all, too few cards), counting both.
    assert d.reason.count("no pool has 8 ") == 1
    assert "2 pools" in d.reason


def test_accelerator_vendor_and_model_explained() -> None:
    pools = [pool("cn/a/ascend", acc=ASCEND)]
    [d] = schedule([task("t", acc={"vendor": "nvidia", "count": 1})], pools)
    assert "no pool has 1 nvidia accelerator card" in d.reason
    [d] = schedule([task("t", acc={"model": "nvidia-h100-sxm", "count": 2})], pools)
    assert "no pool has 2 nvidia-h100-sxm cards in one pool" in d.reason
    [d] = schedule([task("t", acc={"count": 1})], [pool("cn/a/cpu")])
    assert "no pool has 1 accelerator card" in d.reason


def test_accelerator_memory_explained() -> None:
    small = Accelerator(vendor="nvidia", model="nvidia-a100-40g", memory_mib=40 * 1024, count=8)
    [d] = schedule([task("t", acc={"min_memory_gib": 80})], [pool("cn/a/p", acc=small)])
    assert d.pool is None
    assert "1 pool" in d.reason and "under 80 GiB" in d.reason


def test_cpu_and_memory_explained() -> None:
    pools = [pool("cn/a/p", cores=8, memory_mib=16384)]
    [d] = schedule([task("t", cores=32)], pools)
    assert "no machine has 32 CPU cores" in d.reason
    [d] = schedule([task("t", ram_gb=100)], pools)
    assert "no machine has 100 GB of memory" in d.reason


def test_cores_are_per_machine() -> None:
    # 4 machines of 8 cores: a 16-core task fits no single machine.
    pools = [pool("cn/a/p", cores=8, machines=4)]
    [d] = schedule([task("t", cores=16)], pools)
    assert d.pool is None and "no machine has 16 CPU cores" in d.reason
    [d] = schedule([task("t", cores=8)], pools)
    assert d.pool == "cn/a/p"


def test_price_cap_explained() -> None:
    pools = [
        pool("cn/a/dear", acc=A100, card_price="30"),
        pool("cn/a/cheap", acc=A100, card_price="12.5"),
    ]
    t = task("t", acc={"count": 1}, max_price_per_card_hour="10")
    [d] = schedule([t], pools)
    assert d.pool is None
    assert "price cap 10" in d.reason
    assert "below every offer" in d.reason
    assert "cheapest 12.5" in d.reason
    t = task("t", acc={"count": 1}, max_price_per_card_hour="12.5")
    assert schedule([t], pools)[0].pool == "cn/a/cheap"  # the cap is inclusive


def test_region_allow_and_deny() -> None:
    pools = [pool("cn/a/sh", region="310101"), pool("cn/a/gd", region="44")]
    [d] = schedule([task("t", regions=["31"])], pools)
    assert d.pool == "cn/a/sh"
    [d] = schedule([task("t", regions_deny=["31"])], pools)
    assert d.pool == "cn/a/gd"
    [d] = schedule([task("t", regions=["11"])], pools)
    assert d.pool is None and "2 pools" in d.reason
    assert "outside the allowed regions" in d.reason
    [d] = schedule([task("t", regions=["31"], regions_deny=["3101"])], pools)
    assert d.pool is None and "outside the allowed regions" in d.reason


def test_several_rules_are_all_explained() -> None:
    pools = [pool("cn/a/sh", region="31", cores=4), pool("cn/a/gd", region="44", cores=64)]
    [d] = schedule([task("t", cores=32, regions=["44", "31"], regions_deny=["44"])], pools)
    assert "no machine has 32 CPU cores" in d.reason
    assert "outside the allowed regions" in d.reason
    assert d.reason.count("1 pool") == 2


def test_unhealthy_pools() -> None:
    pools = [
        pool("cn/a/p", health=PoolHealth.UNHEALTHY),
        pool("cn/a/q", health=PoolHealth.UNHEALTHY),
    ]
    [d] = schedule([task("t")], pools)
    assert d.pool is None
    assert "unhealthy" in d.reason and "all 2 eligible pools" in d.reason
    pools.append(pool("cn/a/r"))
    assert schedule([task("t")], pools)[0].pool == "cn/a/r"


def test_busy_and_unhealthy_mix_says_waiting() -> None:
    pools = [
        pool("cn/a/p", health=PoolHealth.UNHEALTHY),
        pool("cn/a/q", free=Capacity()),
    ]
    [d] = schedule([task("t")], pools)
    assert d.reason == "waiting for capacity on 1 eligible pools"


# ---- policy -------------------------------------------------------------------------------


def test_balanced_weighs_cost_when_finish_and_carbon_tie() -> None:
    pools = [
        pool("cn/a/cheap-small", cores=4, core_price="0.10"),
        pool("cn/a/dear-big", cores=64, core_price="0.50"),
    ]
    [cheap] = schedule([task("t", policy="cheapest")], pools)
    [bal] = schedule([task("t", policy="balanced")], pools)
    assert cheap.pool == "cn/a/cheap-small"
    # same region and CPU speed: finish time and carbon tie, so balanced's cost term decides
    assert bal.pool == "cn/a/cheap-small"


def test_balanced_spreads_load_across_a_pass() -> None:
    pools = [pool("cn/a/p", cores=4), pool("cn/a/q", cores=4)]
    decisions = schedule([task(f"t{i}", seq=i) for i in range(4)], pools)
    counts = {"cn/a/p": 0, "cn/a/q": 0}
    for d in decisions:
        assert d.pool is not None
        counts[d.pool] += 1
    assert counts == {"cn/a/p": 2, "cn/a/q": 2}


def test_cheapest_uses_card_price_for_accelerator_tasks() -> None:
    pools = [
        pool("cn/a/x", acc=A100, card_price="20", core_price="0"),
        pool("cn/a/y", acc=A100, card_price="10", core_price="5"),
    ]
    [d] = schedule([task("t", acc={"count": 1}, policy="cheapest")], pools)
    assert d.pool == "cn/a/y"
    [d] = schedule([task("t", policy="cheapest")], pools)  # CPU-only: core price
    assert d.pool == "cn/a/x"


# ---- accelerator constraints ------------------------------------------------------------


@pytest.mark.parametrize(
    ("acc", "placed"),
    [
        ({"vendor": "nvidia"}, "cn/a/a100"),
        ({"vendor": "NVIDIA"}, "cn/a/a100"),  # case-insensitive
        ({"vendor": "huawei"}, "cn/a/ascend"),
        ({"model": "nvidia-a100-80g"}, "cn/a/a100"),
        ({"model": "Huawei-Ascend-910B"}, "cn/a/ascend"),
        ({"min_memory_gib": 80}, "cn/a/a100"),
        ({"min_memory_gib": 81}, None),
        ({"count": 8}, "cn/a/ascend"),
        ({"count": 9}, None),
        ({"vendor": "nvidia", "count": 8}, None),
        ({"vendor": "cambricon"}, None),
    ],
)
def test_accelerator_constraints(acc: dict[str, Any], placed: str | None) -> None:
    pools = [pool("cn/a/a100", acc=A100), pool("cn/a/ascend", acc=ASCEND), pool("cn/a/cpu")]
    [d] = schedule([task("t", acc=acc, policy="cheapest")], pools)
    assert d.pool == placed
    if placed is None:
        assert d.reason


def test_card_count_spans_machines_of_one_pool() -> None:
    two_machines = pool("cn/a/p", acc=A100, machines=2)  # 8 cards in all
    assert hard_reject(task("t", acc={"count": 8}).spec, two_machines) is None
    assert hard_reject(task("t", acc={"count": 9}).spec, two_machines) is not None


def test_hard_reject_rules() -> None:
    p = pool("cn/a/p", cores=8, memory_mib=4096, region="31", core_price="2")
    assert hard_reject(task("t").spec, p) is None
    assert hard_reject(task("t", pool="cn/a/q").spec, p) == "pinned"
    assert hard_reject(task("t", acc={"count": 1}).spec, p) == "accelerator"
    assert hard_reject(task("t", cores=9).spec, p) == "cpu"
    assert hard_reject(task("t", ram_gb=5).spec, p) == "memory"
    assert hard_reject(task("t", regions=["44"]).spec, p) == "region"
    assert hard_reject(task("t", regions_deny=["31"]).spec, p) == "region"
    assert hard_reject(task("t", max_price_per_card_hour="1").spec, p) == "price"


# ---- pinning ------------------------------------------------------------------------------


def test_pinned_pool_overrides_the_policy() -> None:
    pools = [pool("cn/a/big", cores=64), pool("cn/a/small", cores=4)]
    [d] = schedule([task("t", pool="cn/a/small")], pools)
    assert d.pool == "cn/a/small"


def test_pinned_pool_must_exist_and_fit() -> None:
    pools = [pool("cn/a/p", cores=4)]
    [d] = schedule([task("t", pool="cn/a/gone")], pools)
    assert d.pool is None
    assert "pinned pool cn/a/gone is not registered" in d.reason
    [d] = schedule([task("t", pool="cn/a/p", cores=8)], pools)
    assert d.pool is None and "no machine has 8 CPU cores" in d.reason


def test_pinned_pool_waits_when_full() -> None:
    pools = [pool("cn/a/p", cores=1), pool("cn/a/q", cores=64)]
    decisions = schedule([task("a", seq=1, pool="cn/a/p"), task("b", seq=2, pool="cn/a/p")], pools)
    assert [d.pool for d in decisions] == ["cn/a/p", None]
    assert "waiting for capacity on 1 eligible pools" in decisions[1].reason


def test_unknown_model_is_named_and_one_card_is_no_gang() -> None:
    pools = [pool("cn/a/a100", acc=A100), pool("cn/a/cpu")]
    [d] = schedule([task("t", acc={"model": "nvidia-zz9000", "count": 1})], pools)
    assert d.pool is None
    assert d.reason.startswith("unknown accelerator model 'nvidia-zz9000'"), d.reason
    # A model some pool declares is not unknown, even when the catalog lacks it.
    [d] = schedule([task("t", acc={"model": "nvidia-a100-80g", "count": 16})], pools)
    assert "unknown" not in d.reason and "16 nvidia-a100-80g cards in one pool" in d.reason
