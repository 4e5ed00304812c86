"""Gateways going silent in the simulator, on hand-checked cases: the core's placer and the
engine with an outage, decided by the live node's health and lease functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from computenet.errors import InvalidInput
from computenet.model.pool import PoolHealth
from computenet.node.settings import NodeSettings
from computenet.sim.core_adapter import CorePlacer
from computenet.sim.engine import SimResult, simulate
from computenet.sim.telemetry import Dispatch, Outage
from computenet.sim.topology import Topology, default_topology
from computenet.sim.trace import Job, synthetic
from simpools import pool

TOPO = Topology(
    pools=(pool("cn.31/a/slow", "slow-card", 4, "1"), pool("cn.31/a/fast", "fast-card", 2, "4"))
)
SLOW, FAST = "cn.31/a/slow", "cn.31/a/fast"


def job(job_id: str, arrival: float, cards: int, runtime_s: float) -> Job:
    return Job(job_id, "t", arrival, cards, {"slow-card": runtime_s, "fast-card": runtime_s})


def run(jobs: list[Job], outages: list[Outage], dispatch: Dispatch | None = None) -> SimResult:
    return simulate(jobs, TOPO, CorePlacer("cheapest", TOPO, jobs, outages, dispatch))


def runs(result: SimResult) -> dict[str, tuple[str, float, float]]:
    return {r.job.job_id: (r.pool.pool_id, r.start_s, r.end_s) for r in result.records}


def test_the_simulated_dispatch_settings_are_the_live_nodes_defaults(tmp_path: Path) -> None:
    live = NodeSettings(data_dir=tmp_path)
    sim = Dispatch()
    assert (sim.lease_ttl_s, sim.heartbeat_timeout_s, sim.housekeeping_s, sim.max_attempts) == (
        live.lease_ttl_s,
        live.heartbeat_timeout_s,
        live.housekeeping_s,
        live.max_attempts,
    )


def test_a_long_outage_unplaces_then_expires_then_recovers() -> None:
    """The cheap pool's gateway is last heard at 100 s and again at 500 s (timeout 20 s,
    lease 30 s, a check every second). j2 is placed there at 105 s but never leased; at
    121 s (not 120 s) the pool turns unhealthy and j2 goes to the dear pool. The leases
    of j0 and j1 end at 130 s and run out at 131 s (j0 ended at 110 s, but its report
    could not reach the node): j0 takes the dear pool's last card; j1 waits for two cards
    there (j2 ends at 171 s, j0 at 241 s), as the cheap pool stays unhealthy until 500 s."""
    jobs = [job("j0", 0, 1, 110), job("j1", 0, 2, 1000), job("j2", 105, 1, 50)]
    result = run(jobs, [Outage((SLOW,), 100, 500)])
    assert runs(result) == {
        "j0": (FAST, 131, 241),
        "j1": (FAST, 241, 1241),
        "j2": (FAST, 121, 171),
    }
    assert result.lost_leases == 2 and not result.failed


def test_without_the_outage_the_same_jobs_stay_on_the_cheap_pool() -> None:
    jobs = [job("j0", 0, 1, 110), job("j1", 0, 2, 1000), job("j2", 105, 1, 50)]
    result = run(jobs, [])
    assert runs(result) == {"j0": (SLOW, 0, 110), "j1": (SLOW, 0, 1000), "j2": (SLOW, 105, 155)}
    assert result.lost_leases == 0


def test_a_short_outage_delays_reports_and_steers_new_work_but_loses_no_lease() -> None:
    """Silent from 100 s to 125 s, less than a lease: unhealthy from 121 s, so j2 (122 s)
    goes to the dear pool; healthy again at 125 s, when j0's end (110 s) is heard and j1's
    lease is renewed."""
    jobs = [job("j0", 0, 1, 110), job("j1", 0, 2, 1000), job("j2", 122, 1, 50)]
    result = run(jobs, [Outage((SLOW,), 100, 125)])
    assert runs(result) == {"j0": (SLOW, 0, 125), "j1": (SLOW, 0, 1000), "j2": (FAST, 122, 172)}
    assert result.lost_leases == 0


def test_a_lost_lease_fails_the_job_after_the_attempt_limit() -> None:
    jobs = [job("j1", 0, 2, 1000), job("j2", 10, 1, 50)]
    result = run(jobs, [Outage((SLOW,), 100, 500)], Dispatch(max_attempts=1))
    assert [j.job_id for j in result.failed] == ["j1"]
    assert runs(result) == {"j2": (SLOW, 10, 60)}
    assert result.lost_leases == 1


def health(placer: CorePlacer) -> dict[str, PoolHealth]:
    return {v.cpi: v.health for v in placer.views({SLOW: 4, FAST: 2})}


def test_the_placer_reports_what_each_check_decided() -> None:
    jobs = [job("j1", 0, 2, 1000), job("j2", 105, 1, 50)]
    placer = CorePlacer("cheapest", TOPO, jobs, [Outage((SLOW,), 100, 500)])
    free = {SLOW: 4, FAST: 2}
    assert [j.job_id for j, _ in placer.place(0, jobs[:1], free, {})] == ["j1"]
    free[SLOW] -= 2
    assert placer.place(105, jobs[1:], free, {"t": 2}) == []  # placed, its gateway silent
    assert placer.checks_s() == [120.0, 121.0, 130.0, 131.0, 500.0]
    at_120 = placer.check(120)
    assert (at_120.unhealthy, at_120.unplaced, at_120.requeued) == ((), (), [])
    at_121 = placer.check(121)
    assert (at_121.unhealthy, at_121.unplaced) == ((SLOW,), ("j2",))
    assert placer.check(130).requeued == []
    assert placer.check(131).requeued == ["j1"]
    assert health(placer)[SLOW] is PoolHealth.UNHEALTHY
    back = placer.check(500)
    assert back.started == [] and back.unhealthy == ()
    assert health(placer) == {SLOW: PoolHealth.HEALTHY, FAST: PoolHealth.HEALTHY}


def test_an_outage_must_name_known_pools_and_end_after_it_starts() -> None:
    with pytest.raises(InvalidInput):
        Outage((SLOW,), 10, 10)
    with pytest.raises(InvalidInput):
        Outage((), 0, 10)
    with pytest.raises(InvalidInput, match="not in the topology"):
        CorePlacer("cheapest", TOPO, [job("j", 0, 1, 1)], [Outage(("nowhere",), 0, 10)])


@pytest.mark.parametrize("policy", ["balanced", "cheapest"])
def test_outages_on_a_contended_trace_keep_every_job_and_every_pool_in_bounds(policy: str) -> None:
    topo = default_topology(machines_per_pool=1)
    jobs = synthetic(300, seed=5, origins=sorted(topo.sites), mean_interarrival_s=20)
    ids = [p.pool_id for p in topo.pools]
    outages = [
        Outage(tuple(ids[0:6]), 600.0, 4000.0),  # longer than a lease
        Outage(tuple(ids[10:14]), 1000.0, 1025.5),  # shorter than a lease
        Outage(tuple(ids[3:5]), 5000.0, 9000.0),
    ]
    result = simulate(jobs, topo, CorePlacer(policy, topo, jobs, outages))
    done = [r.job.job_id for r in result.records]
    assert len(done) == len(set(done))
    assert len(done) + len(result.unplaceable) + len(result.failed) == len(jobs)
    assert result.lost_leases > 0  # the case really loses leases
    silent = {p: [o for o in outages if p in o.pools] for p in ids}
    for p in topo.pools:
        mine = [r for r in result.records if r.pool.pool_id == p.pool_id]
        # No job starts on a pool while its gateway is silent (it leases nothing).
        assert not any(o.silences(r.start_s) for r in mine for o in silent[p.pool_id])
        events = sorted(
            [(r.end_s, -r.job.cards) for r in mine] + [(r.start_s, r.job.cards) for r in mine]
        )
        used = 0
        for _, delta in events:
            used += delta
            assert used <= p.cards
