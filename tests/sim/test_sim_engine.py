"""The virtual-time engine on a tiny hand-checked case, its invariants, and the lower bound."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest

from computenet.sim.baselines import BASELINES, cheapest_first
from computenet.sim.core_adapter import CORE_POLICIES, CorePlacer
from computenet.sim.engine import PlacementError, SimResult, lower_bound_s, simulate
from computenet.sim.placers import can_run
from computenet.sim.topology import SimPool, Topology, default_topology
from computenet.sim.trace import Job, synthetic
from simpools import pool


def job(job_id: str, arrival: float, cards: int, slow: float, fast: float) -> Job:
    return Job(job_id, "t", arrival, cards, {"slow-card": slow, "fast-card": fast})


def test_hand_checked_case(two_pools: Topology) -> None:
    jobs = [job("j1", 0, 2, 100, 50), job("j2", 10, 2, 100, 50), job("j3", 20, 1, 80, 50)]
    result = simulate(jobs, two_pools, cheapest_first(two_pools))
    got = {r.job.job_id: (r.pool.pool_id, r.start_s, r.end_s) for r in result.records}
    # j1 takes the cheap pool; j2 finds it full and takes the dear one; j3 waits for a card:
    # the dear pool frees first (t=60), so j3 starts there at 60 and ends at 110.
    assert got == {
        "j1": ("cn.31/a/slow", 0, 100),
        "j2": ("cn.31/a/fast", 10, 60),
        "j3": ("cn.31/a/fast", 60, 110),
    }
    jct = {r.job.job_id: r.jct_s for r in result.records}
    assert jct == {"j1": 100, "j2": 50, "j3": 90}
    expected = (Decimal(1) * 2 * 100 + Decimal(4) * 2 * 50 + Decimal(4) * 1 * 50) / 3600
    assert abs(sum(r.cost for r in result.records) - expected) < Decimal("1e-20")
    j1 = result.records[0]
    assert j1.energy_kwh == pytest.approx(0.3 * 2 * 100 / 3600 * 1.5)
    assert j1.carbon_kg == pytest.approx(j1.energy_kwh * 0.5)


def check_invariants(jobs: Sequence[Job], topo: Topology, result: SimResult) -> None:
    placed = [r.job.job_id for r in result.records]
    assert len(placed) == len(set(placed))  # each job runs once
    assert len(placed) + len(result.unplaceable) == len(jobs)
    for r in result.records:
        assert can_run(r.job, r.pool)
        assert r.start_s >= r.job.arrival_s
        assert r.jct_s >= r.job.runtime_s[r.pool.accelerator] - 1e-9
        assert r.jct_s >= lower_bound_s(r.job, topo) - 1e-9
        assert r.cost == r.pool.price_per_card_hour * r.job.cards * Decimal(r.held_s) / 3600
    for p in topo.pools:  # never over capacity: sweep the pool's starts and ends in time order
        events = sorted(
            [(r.end_s, -r.job.cards) for r in result.records if r.pool.pool_id == p.pool_id]
            + [(r.start_s, r.job.cards) for r in result.records if r.pool.pool_id == p.pool_id]
        )
        used = 0
        for _, delta in events:  # ends sort before starts at the same instant
            used += delta
            assert used <= p.cards


@pytest.mark.parametrize("policy", [*CORE_POLICIES, *BASELINES])
def test_invariants_on_a_contended_synthetic_trace(policy: str) -> None:
    topo = default_topology(machines_per_pool=1)
    jobs = synthetic(300, seed=5, origins=sorted(topo.sites), mean_interarrival_s=20)
    placer = CorePlacer(policy, topo, jobs) if policy in CORE_POLICIES else BASELINES[policy](topo)
    result = simulate(jobs, topo, placer)
    check_invariants(jobs, topo, result)
    assert not result.unplaceable
    assert max(r.wait_s for r in result.records) > 0  # the case really queues


class Greedy:
    """A placer that ignores free capacity: the engine must refuse it."""

    name = "greedy"

    def __init__(self, target: SimPool) -> None:
        self.target = target

    def place(
        self,
        now_s: float,
        pending: Sequence[Job],
        free: Mapping[str, int],
        held: Mapping[str, int],
    ) -> list[tuple[Job, SimPool]]:
        return [(j, self.target) for j in pending]


def test_engine_refuses_an_overfilling_placer(two_pools: Topology) -> None:
    jobs = [job("j1", 0, 2, 100, 50), job("j2", 0, 2, 100, 50)]
    with pytest.raises(PlacementError, match=r"greedy placed j2 on cn\.31/a/slow"):
        simulate(jobs, two_pools, Greedy(two_pools.pools[0]))


def test_job_no_pool_can_run_is_reported_not_lost(two_pools: Topology) -> None:
    jobs = [job("ok", 0, 1, 10, 5), Job("huge", "t", 0, 3, {"slow-card": 10})]
    result = simulate(jobs, two_pools, cheapest_first(two_pools))
    assert [j.job_id for j in result.unplaceable] == ["huge"]
    assert [r.job.job_id for r in result.records] == ["ok"]


def test_lower_bound_is_fastest_option_with_transfer() -> None:
    here = pool("cn.31/a/slow", "slow-card", 2, "1")
    there = pool("cn.51/b/fast", "fast-card", 2, "4", region="51")
    topo = Topology(pools=(here, there))
    link = topo.link("31", "51")
    # the core's model: ~1,630 km Shanghai-Chengdu, RTT 2 ms + 2 x 1.5 x distance / 200 km/ms
    assert 26 < link.rtt_ms < 27
    assert link.bandwidth_mbps == 1000
    data_in_31 = Job("j", "t", 0, 1, {"slow-card": 100, "fast-card": 50}, origin="31", input_gb=4)
    # to Chengdu: 4 GB at 1 Gb/s = 32 s plus the round trip, then 50 s; at home: ~3.2 s + 100 s
    transfer = topo.transfer_s("31", there, 4)
    assert transfer == pytest.approx(32 + link.rtt_ms / 1000)
    assert lower_bound_s(data_in_31, topo) == pytest.approx(transfer + 50)
    heavy = Job("h", "t", 0, 1, {"slow-card": 100, "fast-card": 50}, origin="31", input_gb=40)
    local = topo.transfer_s("31", here, 40)  # within a site: 10 Gb/s
    assert local == pytest.approx(32 + topo.link("31", "31").rtt_ms / 1000)
    assert lower_bound_s(heavy, topo) == pytest.approx(local + 100)  # staying home wins
    assert topo.transfer_s("", there, 40) == 0  # no origin: data is wherever it runs
