"""Each policy's choice on a small hand-checked case, and the estimates behind it.

Four pools, one card each wanted, a runtime hint of 10 h on the reference V100 (125 FP16
TFLOPS), the user in Beijing (11):

| pool | card (TFLOPS) | price | region (gCO2/kWh) | run | cost | carbon g | rtt ms |
|---|---|---|---|---|---|---|---|
| a/v100 | V100 125 | 5 | Sichuan 51 (150) | 36000 s | 50.0 | 780 | 24.9 |
| b/h100 | H100 989 | 60 | Shanghai 31 (550) | 4550 s | 75.8 | 361 | 18.0 |
| c/a100 | A100 312 | 20 | Beijing 11 (600) | 14423 s | 80.1 | 1250 | 2.0 |
| d/h100 | H100 989 | 80 | Sichuan 51 (150) | 4550 s | 101.1 | 98.6 | 24.9 |

run = 36000 x 125 / TFLOPS; cost = price x run_h; carbon = 0.4 kW x run_h x PUE 1.3 x grid.
"""

from __future__ import annotations

import pytest
from sched_helpers import gpu_pool, gpu_task

from computenet.model.task import Policy
from computenet.sched.core import Context, Link, PoolTelemetry, explain, rank_offers, schedule

POOLS = [
    gpu_pool("cn/a/v100", "nvidia-v100-sxm2-32g", "5", "51"),
    gpu_pool("cn/b/h100", "nvidia-h100-sxm", "60", "31"),
    gpu_pool("cn/c/a100", "nvidia-a100-sxm-80g", "20", "11"),
    gpu_pool("cn/d/h100", "nvidia-h100-sxm", "80", "51"),
]


@pytest.mark.parametrize(
    ("policy", "pool"),
    [
        (Policy.CHEAPEST, "cn/a/v100"),  # 50.0 is the lowest cost
        (Policy.FASTEST, "cn/b/h100"),  # H100s tie on 4550 s; cost breaks the tie (60 < 80)
        (Policy.GREENEST, "cn/d/h100"),  # 98.6 g: fast card on a hydro grid
        (Policy.NEAREST, "cn/c/a100"),  # Beijing to Beijing: 2 ms
        # balanced = 0.5 finish + 0.3 cost + 0.2 carbon, each scaled to [0, 1] over the four:
        # b: 0 + 0.3 x (75.8-50)/(101.1-50) + 0.2 x (361-98.6)/(1250-98.6) = 0.197 (lowest)
        (Policy.BALANCED, "cn/b/h100"),
    ],
)
def test_each_policy_chooses_the_hand_checked_pool(policy: Policy, pool: str) -> None:
    task = gpu_task(runtime_hint_s=36000, policy=policy.value)
    [d] = schedule([task], POOLS)
    assert d.pool == pool
    assert rank_offers(task.spec, POOLS)[0].pool == pool
    assert d.estimate is not None and d.estimate.pool == pool


def test_estimates_match_the_table() -> None:
    offers = {e.pool: e for e in rank_offers(gpu_task(runtime_hint_s=36000).spec, POOLS)}
    v100, h100, a100 = offers["cn/a/v100"], offers["cn/b/h100"], offers["cn/c/a100"]
    assert v100.run_s == pytest.approx(36000)
    assert h100.run_s == pytest.approx(36000 * 125 / 989)
    assert a100.run_s == pytest.approx(36000 * 125 / 312)
    assert v100.cost == pytest.approx(50.0)
    assert v100.carbon_g == pytest.approx(0.4 * 10 * 1.3 * 150)
    assert a100.rtt_ms == pytest.approx(2.0)
    assert offers["cn/b/h100"].score == pytest.approx(
        0.3 * 25.834 / 51.112 + 0.2 * 262.89 / 1151.4, abs=1e-3
    )


def test_policy_argument_overrides_the_tasks_own() -> None:
    task = gpu_task(runtime_hint_s=36000, policy="cheapest")
    assert schedule([task], POOLS, policy=Policy.FASTEST)[0].pool == "cn/b/h100"


def test_queue_wait_delays_start_and_steers_fastest() -> None:
    pools = [
        gpu_pool("cn/b/h100", "nvidia-h100-sxm", "60", "31", free_cards=0),
        gpu_pool("cn/d/h100", "nvidia-h100-sxm", "80", "51"),
    ]
    ctx = Context(telemetry={"cn/b/h100": PoolTelemetry(queue_wait_s=600)})
    offers = rank_offers(gpu_task(runtime_hint_s=36000, policy="fastest").spec, pools, ctx)
    assert [o.pool for o in offers] == ["cn/d/h100", "cn/b/h100"]
    assert offers[1].wait_s == 600 and offers[1].start_s == 600
    assert offers[0].wait_s == 0  # it has room now, so telemetry's wait does not apply


def test_unreliable_pool_loses_under_fastest() -> None:
    ctx = Context(telemetry={"cn/b/h100": PoolTelemetry(reliability=0.5)})
    task = gpu_task(runtime_hint_s=36000, policy="fastest")
    # b's expected finish doubles (4550 / 0.5), d (same speed, reliable) wins despite its price
    assert schedule([task], POOLS, ctx)[0].pool == "cn/d/h100"


def test_measured_network_overrides_the_distance_model() -> None:
    task = gpu_task(runtime_hint_s=36000, policy="nearest")
    ctx = Context(network={("11", "31"): Link(rtt_ms=1.0, bandwidth_mbps=1000)})
    assert schedule([task], POOLS, ctx)[0].pool == "cn/b/h100"
    assert rank_offers(task.spec, POOLS, ctx)[0].rtt_ms == 1.0


def test_gavel_throughput_table_beats_tflops_where_it_has_the_workload() -> None:
    # CycleGAN on a V100 runs 4.43 steps/s, on a K80 0.50 (Gavel): ratio 8.8, not TFLOPS'
    pools = [gpu_pool("cn/k/k80", "nvidia-k80", "1", "51"), gpu_pool("cn/v/v100")]
    spec = gpu_task(runtime_hint_s=1000, workload="CycleGAN").spec
    runs = {e.pool: e.run_s for e in rank_offers(spec, pools)}
    assert runs["cn/v/v100"] == pytest.approx(1000)
    assert runs["cn/k/k80"] == pytest.approx(1000 * 4.42609 / 0.504771, rel=1e-4)


def test_explain_a_placed_task_ranks_the_winner_first() -> None:
    task = gpu_task(runtime_hint_s=36000, policy="cheapest")
    ex = explain("t", task.spec, POOLS)
    assert ex.eligible == 4 and ex.excluded == {}
    assert ex.candidates[0].pool == "cn/a/v100"
    assert ex.candidates[0].score < ex.candidates[1].score
    assert ex.policy == "cheapest"


def test_unknown_speed_is_the_declared_run_time_and_explain_says_so() -> None:
    # Ascend 910B2 has no citable FP16 figure: its run time is the hint as declared, flagged,
    # not the V100's speed in disguise; the A100 beside it is scaled by its catalog figure.
    pools = [
        gpu_pool("cn/e/910b2", "huawei-ascend-910b2", "5", "51", vendor="huawei", memory_gib=64),
        gpu_pool("cn/c/a100", "nvidia-a100-sxm-80g", "20", "11"),
    ]
    task = gpu_task(runtime_hint_s=36000)
    offers = {e.pool: e for e in rank_offers(task.spec, pools)}
    ascend, a100 = offers["cn/e/910b2"], offers["cn/c/a100"]
    assert ascend.run_s == pytest.approx(36000) and not ascend.speed_known
    assert a100.run_s == pytest.approx(36000 * 125 / 312) and a100.speed_known
    ex = explain("t", task.spec, pools)
    assert ex.speed_note.startswith("speed unknown on 1 of 2 candidate pools")
    assert "declared run time" in ex.speed_note
    [d] = schedule([task], pools)
    assert d.estimate is not None and d.estimate.speed_known == (d.pool == "cn/c/a100")


def test_unknown_hint_card_leaves_every_speed_unknown() -> None:
    # A hint measured on a card without a figure cannot be scaled to any other card.
    task = gpu_task(runtime_hint_s=3600, hint_model="huawei-ascend-910b3")
    offers = rank_offers(task.spec, POOLS)
    assert {e.run_s for e in offers} == {3600} and not any(e.speed_known for e in offers)
    assert explain("t", task.spec, POOLS).speed_note.startswith("speed unknown on 4 of 4")
