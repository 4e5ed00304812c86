"""Each hard constraint (counted by explain), variants, and data-aware transfer estimates."""

from __future__ import annotations

from typing import Any

import pytest
from sched_helpers import gpu_pool, gpu_task

from computenet.model.pool import Software
from computenet.sched.core import Context, Dataset, explain, rank_offers, schedule

POOLS = [
    gpu_pool(
        "cn/n/v100",
        "nvidia-v100-sxm2-32g",
        "5",
        "51",
        software=Software(driver="535.104", cuda="12.2", container_runtimes=["apptainer"]),
        labels={"tier": "gold"},
    ),
    gpu_pool(
        "cn/n/h100",
        "nvidia-h100-sxm",
        "60",
        "31",
        memory_gib=80,
        software=Software(driver="550.54", cuda="12.4", container_runtimes=["docker"]),
    ),
    gpu_pool(
        "cn/h/910b",
        "huawei-ascend-910b3",
        "20",
        "44",
        vendor="huawei",
        memory_gib=64,
        software=Software(cann="8.0"),
        arch="aarch64",
    ),
]


@pytest.mark.parametrize(
    ("resources", "placement", "rule", "left"),
    [
        ({"architecture": "aarch64"}, {}, "architecture", ["cn/h/910b"]),
        ({"accelerator": {"vendor": "huawei"}}, {}, "accelerator", ["cn/h/910b"]),
        ({"accelerator": {"model": "H100"}}, {}, "accelerator", ["cn/n/h100"]),
        ({"accelerator": {"model": "nvidia-v100-sxm2-32g"}}, {}, "accelerator", ["cn/n/v100"]),
        (
            {"accelerator": {"min_memory_gib": 64}},
            {},
            "accelerator_memory",
            ["cn/h/910b", "cn/n/h100"],
        ),
        ({"accelerator": {"count": 9}}, {}, "gang", []),
        ({"cpu_cores": 65}, {}, "cpu", []),
        ({"ram_gb": 600}, {}, "memory", []),
        ({"software": {"cuda": "12.3"}}, {}, "software", ["cn/n/h100"]),
        ({"software": {"driver": "536"}}, {}, "software", ["cn/n/h100"]),
        ({"software": {"cann": "7.0"}}, {}, "software", ["cn/h/910b"]),
        ({"software": {"container_runtime": "apptainer"}}, {}, "container_runtime", ["cn/n/v100"]),
        ({}, {"regions": ["31", "44"]}, "region", ["cn/h/910b", "cn/n/h100"]),
        ({}, {"regions_deny": ["51"]}, "region", ["cn/h/910b", "cn/n/h100"]),
        ({}, {"max_price_per_card_hour": "20"}, "price", ["cn/h/910b", "cn/n/v100"]),
        ({}, {"labels": {"tier": "gold"}}, "labels", ["cn/n/v100"]),
        ({}, {"pool": "cn/n/h100"}, "pinned", ["cn/n/h100"]),
    ],
)
def test_each_constraint_excludes_and_is_counted(
    resources: dict[str, Any], placement: dict[str, Any], rule: str, left: list[str]
) -> None:
    res = {"accelerator": {"count": 1}, **resources}
    if "accelerator" in resources:
        res["accelerator"] = {"count": 1, **resources["accelerator"]}
    task = gpu_task(resources=res, **placement)
    ex = explain("t", task.spec, POOLS)
    assert ex.excluded == {rule: 3 - len(left)}
    assert sorted(c.pool for c in ex.candidates) == left
    [d] = schedule([task], POOLS)
    assert (d.pool is None) == (not left)
    if not left:
        assert d.reason and ex.reason == d.reason


def test_variants_let_a_task_cross_architectures() -> None:
    variants = [
        {"name": "cuda", "accelerator": {"vendor": "nvidia", "count": 8}, "image": "x:cuda"},
        {"name": "ascend", "accelerator": {"vendor": "huawei", "count": 8}, "image": "x:cann"},
    ]
    nvidia_busy = [gpu_pool("cn/n/v100", free_cards=0), POOLS[2]]
    [d] = schedule([gpu_task(variants=variants)], nvidia_busy)
    assert (d.pool, d.variant) == ("cn/h/910b", 1)
    chosen = gpu_task(variants=variants).spec.with_variant(1)
    assert chosen.executors[0].image == "x:cann" and chosen.variants == []
    assert (
        chosen.resources.accelerator is not None and chosen.resources.accelerator.vendor == "huawei"
    )


def test_variants_with_different_card_counts_compete_on_the_policy() -> None:
    # each variant states its own run time hint
    variants = [
        {"name": "one", "accelerator": {"count": 1}, "runtime_hint_s": 8000},
        {"name": "eight", "accelerator": {"count": 8}, "runtime_hint_s": 1200},
    ]
    pools = [gpu_pool("cn/n/v100")]
    fastest = schedule([gpu_task(variants=variants, policy="fastest")], pools)[0]
    cheapest = schedule([gpu_task(variants=variants, policy="cheapest")], pools)[0]
    assert fastest.variant == 1  # 1200 s < 8000 s
    assert cheapest.variant == 0  # 8000 s x 1 card < 1200 s x 8 cards
    only_four = [gpu_pool("cn/n/v100", free_cards=4)]
    assert schedule([gpu_task(variants=variants, policy="fastest")], only_four)[0].variant == 0


def test_explain_counts_for_the_best_variant_and_says_why_not() -> None:
    variants = [{"accelerator": {"vendor": "cambricon"}}, {"accelerator": {"model": "H200"}}]
    ex = explain("t", gpu_task(variants=variants).spec, POOLS)
    assert ex.eligible == 0 and ex.excluded == {"accelerator": 3}
    assert "no pool has 1 " in ex.reason


DATA = Context(datasets={"genome": Dataset("genome", 2000 * 10**9, ("51",))})
TWO = [gpu_pool("cn/n/v100", region="51"), gpu_pool("cn/n/h100", "nvidia-h100-sxm", "60", "31")]


def test_transfer_time_and_egress_follow_the_replicas() -> None:
    offers = {e.pool: e for e in rank_offers(gpu_task(datasets=["genome"]).spec, TWO, DATA)}
    # 2 TB: inside Sichuan at 10 Gbit/s = 1600 s; to Shanghai at 1 Gbit/s = 16000 s (+ rtt)
    assert offers["cn/n/v100"].transfer_s == pytest.approx(1600, abs=1)
    assert offers["cn/n/h100"].transfer_s == pytest.approx(16000, abs=1)
    # egress at 0.5 per GB only when data leaves its province
    assert offers["cn/n/h100"].cost - offers["cn/n/h100"].run_s / 3600 * 60 == pytest.approx(1000)


def test_data_heavy_work_goes_to_the_data_compute_heavy_to_the_fast_pool() -> None:
    data_heavy = gpu_task("d", datasets=["genome"], runtime_hint_s=3600, policy="fastest")
    compute_heavy = gpu_task("c", datasets=["genome"], runtime_hint_s=360000, policy="fastest")
    by = {d.task_id: d.pool for d in schedule([data_heavy, compute_heavy], TWO, DATA)}
    assert by == {"d": "cn/n/v100", "c": "cn/n/h100"}
    no_data = gpu_task("n", runtime_hint_s=3600, policy="fastest")
    assert schedule([no_data], TWO, DATA)[0].pool == "cn/n/h100"


def test_unknown_dataset_adds_no_transfer() -> None:
    [e] = rank_offers(gpu_task(datasets=["nope"]).spec, TWO[:1], DATA)
    assert e.transfer_s == 0


@pytest.mark.parametrize("version", ["12.x", "", "1..2", "v12"])
def test_software_versions_must_be_dotted_numbers(version: str) -> None:
    with pytest.raises(ValueError, match="dotted numbers"):
        gpu_task(resources={"software": {"cuda": version}})


def test_one_card_is_not_a_gang_constraint() -> None:
    one = explain("t", gpu_task(variants=[{"accelerator": {"model": "H200"}}]).spec, POOLS)
    assert "gang" not in one.excluded
    eight = explain("t", gpu_task(variants=[{"accelerator": {"count": 64}}]).spec, POOLS)
    assert eight.excluded.get("gang") == len(POOLS)
