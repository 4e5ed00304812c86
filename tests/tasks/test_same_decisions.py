"""A live node and the simulator make the same decisions on the same inputs.

The live side is a real node runtime on a real SQLite store: a gateway declares the
simulated pools, users submit the jobs' tasks, and one scheduling pass runs (its inputs read
from the store, its plan written back in guarded transactions). The simulator's side is its
placer (``CorePlacer``, no store) on the same pools and jobs. Both decide with
``computenet.tasks.placement.plan_pass``; the test checks that the two ways of building its
inputs agree, and that the in-memory apply step (``apply_plan``) leaves the tasks where the
live node's store apply left them. Both hand placed tasks to gateways and expire leases with
``computenet.tasks.dispatching`` (``lease_order``, ``expiries``): the last test checks that the
live dispatcher's leases and expiries match the simulator's on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from computenet.model.protocol import DeclarePools, Heartbeat, PoolLive, PoolSpec
from computenet.model.task import Policy, TaskSpec
from computenet.node.runtime import NodeRuntime
from computenet.node.sched_apply import preempt
from computenet.node.settings import NodeSettings
from computenet.sched.core import Decision
from computenet.sim.core_adapter import CORE_POLICIES, CorePlacer, pool_spec, task_spec
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job
from computenet.store import tables as t
from computenet.tasks.clock import FakeClock
from computenet.tasks.dispatching import Held, expiries
from computenet.tasks.lifecycle import Event, Phase, apply
from computenet.tasks.placement import Plan, TaskRecord, Waiting, apply_plan, plan_pass
from computenet.tasks.transitions import current_phase


def _pool(
    pool_id: str, region: str, model: str, memory_gib: int, machines: int, price: str
) -> SimPool:
    return SimPool(
        pool_id=pool_id,
        site=f"site-{region}",
        region=region,
        lat=30.0 + int(region) / 10,
        lon=110.0 + int(region) / 10,
        accelerator=model,
        memory_gib=memory_gib,
        cards_per_machine=8,
        machines=machines,
        price_per_card_hour=Decimal(price),
        card_power_w=400.0,
        carbon_g_per_kwh=550.0,
    )


TOPOLOGY = Topology(
    pools=(
        _pool("sim/a/a100-gz", "52", "nvidia-a100-sxm-80g", 80, 1, "15.0"),
        _pool("sim/b/v100-sh", "31", "nvidia-v100-sxm2-32g", 32, 2, "8.0"),
        _pool("sim/c/a100-gd", "44", "nvidia-a100-sxm-80g", 80, 1, "12.0"),
    )
)
SPEEDS = {"nvidia-a100-sxm-80g": 1.0, "nvidia-v100-sxm2-32g": 2.2}  # run time vs. an A100


def _jobs() -> list[Job]:
    """More cards asked for than there are (40), from three tenants, mixed priorities."""
    shapes = [(8, 0, 0), (4, 1, 0), (2, 2, 5), (8, 0, 0), (1, 1, 0), (4, 2, -3), (8, 1, 0),
              (2, 0, 40), (8, 2, 0), (1, 0, 0)]  # fmt: skip
    return [
        Job(
            job_id=f"job-{i:02d}",
            tenant=f"tenant-{tenant}",
            arrival_s=0.0,
            cards=cards,
            runtime_s={m: 600.0 * (i + 1) * f for m, f in SPEEDS.items()},
            min_memory_gib=min_memory,
            priority=priority,
        )
        for i, (cards, tenant, priority, min_memory) in enumerate(
            (c, t, p, 0 if i % 3 else 40) for i, (c, t, p) in enumerate(shapes)
        )
    ]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[NodeRuntime]:
    runtime = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn"), FakeClock())
    runtime.bootstrap()
    yield runtime
    runtime.federation.peer.close()
    runtime.db.dispose()


def _live(rt: NodeRuntime, jobs: list[Job], policy: Policy) -> dict[str, str | None]:
    """Job id -> label of the pool the live node placed it on (None: still waiting)."""
    prefix, token = rt.enrol_provider("sim", "")
    rt.auth.redeem_enrolment(token)
    gid = rt.dispatch.register_gateway(prefix, "sim-gw")
    rt.dispatch.declare_pools(gid, DeclarePools(pools=[pool_spec(p) for p in TOPOLOGY.pools]))
    ids = {}
    for job in jobs:
        spec = task_spec(job, policy, TOPOLOGY.pools)
        ids[job.job_id] = rt.tasks.submit(spec, job.tenant)[0]
    rt.placer.schedule_pass()
    out: dict[str, str | None] = {}
    with rt.db.read() as s:
        for job_id, tid in ids.items():
            row = s.get(t.Task, tid)
            assert row is not None
            phase = current_phase(s, row)
            assert phase in (Phase.WAITING, Phase.PLACED), phase
            out[job_id] = row.pool_cpi.rsplit("/", 1)[1] if phase is Phase.PLACED else None
            assert (row.pool_cpi is None) == (phase is Phase.WAITING)
    return out


@pytest.mark.parametrize("policy", CORE_POLICIES)
def test_a_live_pass_and_the_simulator_place_the_same_jobs_on_the_same_pools(
    rt: NodeRuntime, policy: str
) -> None:
    jobs = _jobs()
    live = _live(rt, jobs, Policy(policy))

    placer = CorePlacer(policy, TOPOLOGY, jobs)
    free = {p.pool_id: p.cards for p in TOPOLOGY.pools}
    placed = placer.place(0.0, jobs, free, {})
    sim: dict[str, str | None] = {j.job_id: None for j in jobs}
    sim.update({job.job_id: pool.pool_id.rsplit("/", 1)[1] for job, pool in placed})

    assert sim == live
    # Not a trivial agreement: the cards run out, so some jobs wait, and every pool is used.
    assert None in sim.values()
    assert {v for v in sim.values() if v} == {p.pool_id.rsplit("/", 1)[1] for p in TOPOLOGY.pools}


def test_the_in_memory_apply_step_agrees_with_the_store_apply(rt: NodeRuntime) -> None:
    jobs = _jobs()
    live = _live(rt, jobs, Policy.BALANCED)
    placer = CorePlacer("balanced", TOPOLOGY, jobs)
    views = placer.views({p.pool_id: p.cards for p in TOPOLOGY.pools})
    waiting = [Waiting(placer.task_view(j.job_id)) for j in jobs]
    plan = plan_pass(waiting, views, placer.context({}))
    # One task was cancelled while the pass decided: the guard keeps it as it is.
    cancelled = plan.placements[0].task_id
    table = {j.job_id: TaskRecord(Phase.WAITING) for j in jobs}
    table[cancelled].phase = Phase.CANCELED
    placed = apply_plan(table, plan, max_attempts=3)
    assert cancelled not in placed and table[cancelled].phase is Phase.CANCELED
    assert table[cancelled].pool is None
    for job_id, rec in table.items():
        if job_id == cancelled:
            continue
        pool = rec.pool.rsplit("/", 1)[1] if rec.pool else None
        assert pool == live[job_id], job_id
        assert rec.phase is (Phase.PLACED if pool else Phase.WAITING)
        assert rec.reason == (
            "" if pool else next(d.reason for d in plan.reasons if d.task_id == job_id)
        )


def test_preempted_leases_give_up_after_max_attempts_in_memory_as_in_the_store(
    tmp_path: Path,
) -> None:
    """The in-memory apply step and the store's apply preempt the same victims the same
    way: a placed task is re-queued, a leased one re-queued while it has attempts left, a
    system error once it has had them all, and a cancelling one ends cancelled."""
    clock = FakeClock()
    settings = NodeSettings(
        data_dir=tmp_path, node_code="cn", max_attempts=2, heartbeat_timeout_s=3600.0
    )
    rt = NodeRuntime(settings, clock)
    rt.bootstrap()
    try:
        prefix, token = rt.enrol_provider("acme", "")
        rt.auth.redeem_enrolment(token)
        gid = rt.dispatch.register_gateway(prefix, "acme-gw")
        cpu = PoolSpec(label="cpu", cpu_cores=8, memory_mib=32768)
        rt.dispatch.declare_pools(gid, DeclarePools(pools=[cpu]))
        spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})

        def lease_one() -> str:
            tid = rt.tasks.submit(spec, "alice")[0]
            assert rt.placer.schedule_pass() == 1
            [lt] = rt.dispatch.lease(gid, 1)
            assert lt.task_id == tid
            return tid

        spent = lease_one()  # expires once, is leased again: its second (last) attempt
        clock.advance(31)
        assert rt.dispatch.expire() == 1
        rt.placer.schedule_pass()
        assert [lt.task_id for lt in rt.dispatch.lease(gid, 1)] == [spent]
        fresh = lease_one()  # first attempt: one left
        cancelling = lease_one()
        rt.tasks.cancel(cancelling)
        placed = rt.tasks.submit(spec, "alice")[0]
        assert rt.placer.schedule_pass() == 1
        victims = (spent, fresh, cancelling, placed)

        def records() -> dict[str, TaskRecord]:
            with rt.db.read() as s:
                rows = {tid: s.get(t.Task, tid) for tid in victims}
                return {
                    tid: TaskRecord(current_phase(s, r), r.pool_cpi, r.reason, attempt=r.attempt)
                    for tid, r in rows.items()
                    if r is not None
                }

        before = records()
        assert [before[v].attempt for v in victims] == [2, 1, 1, 0]
        table = records()
        plan = Plan((Decision("urgent", before[placed].pool, preempt=victims),), ())
        assert apply_plan(table, plan, max_attempts=2) == []  # "urgent" is not in the table

        with rt.db.write() as s:  # the live node's apply of the same victims
            for victim in victims:
                preempt(s, victim, "urgent", clock(), rt.dispatch.preempted)
        after = records()
    finally:
        rt.federation.peer.close()
        rt.db.dispose()

    phases = {v: (table[v].phase, after[v].phase) for v in victims}
    assert phases == {
        spent: (Phase.SYSTEM_ERROR, Phase.SYSTEM_ERROR),
        fresh: (Phase.WAITING, Phase.WAITING),
        cancelling: (Phase.CANCELED, Phase.CANCELED),
        placed: (Phase.WAITING, Phase.WAITING),
    }
    for v in victims:
        assert (table[v].pool, table[v].reason) == (after[v].pool, after[v].reason), v
    assert after[fresh].reason.startswith("re-queued: lease on ")


@dataclass
class SimLease:
    """The simulator's own record of a job it handed out: in virtual seconds."""

    phase: Phase
    attempt: int
    expires_s: float | None


def _phases(rt: NodeRuntime, ids: dict[str, str]) -> dict[str, Phase]:
    with rt.db.read() as s:
        rows = {job_id: s.get(t.Task, tid) for job_id, tid in ids.items()}
        return {job_id: current_phase(s, row) for job_id, row in rows.items() if row is not None}


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_a_live_node_and_the_simulator_lease_and_expire_alike(
    tmp_path: Path, max_attempts: int
) -> None:
    """Two gateways lease what the pass placed on their pools, a few at a time, at different
    times on a FakeClock: the live dispatcher (a real SQLite node) and the simulator's placer
    hand out the same tasks in the same order (priority, then submission, capped). Then,
    with some leases renewed and two being cancelled, the live ``expire`` and the pure
    ``expiries`` over the simulator's own record of its leases (virtual seconds) agree, round
    after round, on which leases ran out and what became of each (re-queued, given up after
    ``max_attempts``, or cancelled)."""
    clock = FakeClock()
    start = clock()
    ttl_s = 30.0
    settings = NodeSettings(
        data_dir=tmp_path,
        node_code="cn",
        lease_ttl_s=ttl_s,
        max_attempts=max_attempts,
        heartbeat_timeout_s=3600.0,  # pools stay healthy: only leases are under test
    )
    rt = NodeRuntime(settings, clock)
    rt.bootstrap()
    jobs = _jobs()
    owners = {"a": TOPOLOGY.pools[:2], "b": TOPOLOGY.pools[2:]}  # two gateways
    try:
        prefix, token = rt.enrol_provider("sim", "")
        rt.auth.redeem_enrolment(token)
        gws = {}
        for g, pools in owners.items():
            gws[g] = rt.dispatch.register_gateway(prefix, f"sim-gw-{g}")
            rt.dispatch.declare_pools(gws[g], DeclarePools(pools=[pool_spec(p) for p in pools]))
        ids = {
            job.job_id: rt.tasks.submit(
                task_spec(job, Policy.BALANCED, TOPOLOGY.pools), job.tenant
            )[0]
            for job in jobs
        }
        job_of = {tid: job_id for job_id, tid in ids.items()}
        rt.placer.schedule_pass()

        placer = CorePlacer("balanced", TOPOLOGY, jobs)
        placed = placer.place(0.0, jobs, {p.pool_id: p.cards for p in TOPOLOGY.pools}, {})
        sim_pools = {g: {p.pool_id for p in pools} for g, pools in owners.items()}
        sim_leases: dict[str, SimLease] = {}
        # (gateway, max_tasks) of each lease call, one every 10 s.
        calls = [("a", 2), ("b", 1), ("a", 2), ("b", 5), ("a", 5)]
        live: list[list[str]] = []
        sim: list[list[str]] = []
        lease_ids: dict[str, str] = {}
        for n, (g, max_tasks) in enumerate(calls):
            got = rt.dispatch.lease(gws[g], max_tasks)
            live.append([job_of[lt.task_id] for lt in got])
            lease_ids.update({job_of[lt.task_id]: lt.lease_id for lt in got})
            handed = placer.lease(placed, sim_pools[g], max_tasks)
            sim.append([job.job_id for job, _ in handed])
            placed = [jp for jp in placed if jp not in handed]
            for job, _ in handed:
                sim_leases[job.job_id] = SimLease(Phase.LEASED, 1, 10.0 * n + ttl_s)
            clock.advance(10)

        assert live == sim
        # Not a trivial agreement: the cap bites, and each call's order is priority first,
        # then submission order, over tasks of several priorities.
        by_job = {j.job_id: (-j.priority, i) for i, j in enumerate(jobs)}
        assert [len(x) for x in live[:3]] == [2, 1, 2]
        for got_ids in live:
            assert [by_job[j] for j in got_ids] == sorted(by_job[j] for j in got_ids)
        flat = [j for x in live for j in x]
        assert len(set(flat)) == len(flat) and not placed
        assert len({by_job[j][0] for j in flat}) >= 3

        # At t=50 s gateway "a" renews the leases of its calls 0 and 4, not of its call 2;
        # one of "a"'s renewed tasks and one of "b"'s are being cancelled.
        now_s = (clock() - start).total_seconds()
        renewing = live[0] + live[4]
        reply = rt.dispatch.heartbeat(
            gws["a"],
            Heartbeat(
                pools=[PoolLive(label=p.pool_id.rsplit("/", 1)[1]) for p in owners["a"]],
                leases=[lease_ids[j] for j in renewing],
            ),
        )
        assert sorted(reply.renewed) == sorted(lease_ids[j] for j in renewing)
        for j in renewing:
            sim_leases[j].expires_s = now_s + ttl_s
        for j in (live[0][0], live[3][0]):
            rt.tasks.cancel(ids[j])
            sim_leases[j].phase = apply(sim_leases[j].phase, Event.CANCEL_REQUESTED)

        outcomes = []
        for step_s in (0, 5, 30):  # at 50 s (a lease ending at 50 s still holds), 55 s, 85 s
            clock.advance(step_s)
            now_s += step_s
            held = [Held(j, r.phase, r.attempt, r.expires_s) for j, r in sim_leases.items()]
            ran_out = expiries(held, now_s, max_attempts)
            for e in ran_out:
                sim_leases[e.task_id] = SimLease(e.phase, sim_leases[e.task_id].attempt, None)
            assert rt.dispatch.expire() == len(ran_out)
            live_phases = _phases(rt, ids)
            assert {j: live_phases[j] for j in sim_leases} == {
                j: r.phase for j, r in sim_leases.items()
            }, now_s
            outcomes.append(sorted((e.task_id, e.event.value, e.phase.value) for e in ran_out))
    finally:
        rt.federation.peer.close()
        rt.db.dispose()

    # Each lease ran out in the round after its end, by its age and renewal, with every
    # outcome the attempt limit allows.
    assert [[j for j, _, _ in round_] for round_ in outcomes] == [
        sorted(live[1]),  # ended at 40 s
        sorted(live[2]),  # ended at 50 s, not renewed: still held at 50 s, gone at 55 s
        sorted(live[0] + live[3] + live[4]),  # ended at 60 s and (renewed) 80 s
    ]
    ends = {phase for round_ in outcomes for _, _, phase in round_}
    lost = Phase.WAITING if max_attempts > 1 else Phase.SYSTEM_ERROR
    assert ends == {lost.value, Phase.CANCELED.value}
