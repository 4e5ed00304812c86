"""A live node and the simulator make the same decisions on the same inputs.

The live side is a real node runtime on a real SQLite store: a gateway declares the
simulated pools, users submit the jobs' tasks, and one scheduling pass runs (its inputs read
from the store, its plan written back in guarded transactions). The simulator's side is its
placer (``CorePlacer``, no store) on the same pools and jobs. Both decide with
``computenet.tasks.placement.plan_pass``; the test checks that the two ways of building its
inputs agree, and that the in-memory apply step (``apply_plan``) leaves the tasks where the
live node's store apply left them. Both hand placed tasks to gateways and expire leases with
``computenet.tasks.dispatching`` (``lease_order``, ``expiries``): a test checks that the
live dispatcher's leases and expiries match the simulator's on the same inputs. Both decide
pool health with ``computenet.tasks.health``: the last tests let a gateway go silent and come
back, and check second by second that both mark the same pools unhealthy, give back and
re-queue the same tasks and place them alike afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from computenet.model.pool import PoolHealth
from computenet.model.protocol import DeclarePools, Heartbeat, PoolLive, PoolSpec
from computenet.model.task import Policy, TaskSpec
from computenet.node import dispatch as dispatch_module
from computenet.node.runtime import NodeRuntime
from computenet.node.sched_apply import preempt
from computenet.node.settings import NodeSettings
from computenet.sched.core import Decision
from computenet.sim.core_adapter import CORE_POLICIES, CorePlacer, pool_spec, task_spec
from computenet.sim.telemetry import Outage
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job
from computenet.store import tables as t
from computenet.tasks.clock import FakeClock
from computenet.tasks.dispatching import Held, expiries
from computenet.tasks.health import Silence, silence_cutoff, went_silent
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


# ---- a gateway going silent: pool health, un-placing, lease expiry, recovery ------------

SILENT_FROM_S, BACK_AT_S, END_S = 10, 50, 56  # gateway "b" heartbeats at <= 10 s and >= 50 s
OWNERS = {"a": TOPOLOGY.pools[:2], "b": TOPOLOGY.pools[2:]}

# One second: the unhealthy pools, and each arrived job's (phase, pool label, attempts).
Tick = tuple[int, tuple[str, ...], dict[str, tuple[Phase, str | None, int]]]


def _outage_jobs() -> list[Job]:
    """Jobs arriving before, during and after gateway "b" goes silent; none ends."""
    shapes = [(0, 4, 40, 0), (0, 8, 40, 0), (0, 8, 0, 0), (15, 4, 40, 1), (15, 4, 0, 0),
              (33, 2, 0, 0), (45, 4, 0, 0), (52, 8, 40, 3)]  # fmt: skip
    return [
        Job(
            job_id=f"job-{i:02d}",
            tenant=f"tenant-{i % 2}",
            arrival_s=float(at),
            cards=cards,
            runtime_s={m: 86_400.0 * f for m, f in SPEEDS.items()},
            min_memory_gib=memory,
            priority=priority,
        )
        for i, (at, cards, memory, priority) in enumerate(shapes)
    ]


def _label(pool: str | None) -> str | None:
    return pool.rsplit("/", 1)[1] if pool else None


def _sim_timeline(jobs: list[Job]) -> list[Tick]:
    """The simulator's side, each second: the node's housekeeping check (heartbeats, lease
    expiry, silence), then a scheduling round over the jobs that arrived and are not leased
    (the engine's bookkeeping of cards, by hand)."""
    silent = tuple(p.pool_id for p in OWNERS["b"])
    placer = CorePlacer("balanced", TOPOLOGY, jobs, [Outage(silent, SILENT_FROM_S, BACK_AT_S)])
    by_id = {j.job_id: j for j in jobs}
    leased: dict[str, str] = {}
    attempts: dict[str, int] = {}
    out: list[Tick] = []

    def take(handed: list[tuple[Job, SimPool]]) -> None:
        for job, pool in handed:
            leased[job.job_id] = pool.pool_id
            attempts[job.job_id] = attempts.get(job.job_id, 0) + 1

    for now in range(END_S + 1):
        check = placer.check(float(now))
        assert not check.failed
        for job_id in check.requeued:
            del leased[job_id]
        take(check.started)
        free = {p.pool_id: p.cards for p in TOPOLOGY.pools}
        held: dict[str, int] = {}
        for job_id, pool in leased.items():
            free[pool] -= by_id[job_id].cards
            held[by_id[job_id].tenant] = held.get(by_id[job_id].tenant, 0) + by_id[job_id].cards
        pending = [j for j in jobs if j.arrival_s <= now and j.job_id not in leased]
        if pending:
            take(placer.place(float(now), pending, free, held))
        placed = placer.placed()
        phases: dict[str, tuple[Phase, str | None, int]] = {}
        for job in jobs:
            tries = attempts.get(job.job_id, 0)
            if job.job_id in leased:
                phases[job.job_id] = (Phase.LEASED, _label(leased[job.job_id]), tries)
            elif job.job_id in placed:
                phases[job.job_id] = (Phase.PLACED, _label(placed[job.job_id]), tries)
            elif job.arrival_s <= now:
                phases[job.job_id] = (Phase.WAITING, None, tries)
        sick = sorted(
            str(_label(v.cpi)) for v in placer.views(free) if v.health is PoolHealth.UNHEALTHY
        )
        out.append((now, tuple(sick), phases))
    return out


def _live_timeline(tmp_path: Path, jobs: list[Job]) -> list[Tick]:
    """The live side on a real SQLite node with the node's default dispatch settings, each
    second on a FakeClock: gateways that are up heartbeat (renewing the leases they hold),
    housekeeping expires, arrivals are submitted, one scheduling pass, and gateways that are
    up lease what was placed on their pools."""
    clock = FakeClock()
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn"), clock)
    rt.bootstrap()
    out: list[Tick] = []
    try:
        prefix, token = rt.enrol_provider("sim", "")
        rt.auth.redeem_enrolment(token)
        gws = {}
        for g, pools in OWNERS.items():
            gws[g] = rt.dispatch.register_gateway(prefix, f"sim-gw-{g}")
            rt.dispatch.declare_pools(gws[g], DeclarePools(pools=[pool_spec(p) for p in pools]))
        holding: dict[str, list[str]] = {g: [] for g in OWNERS}  # lease ids each gateway holds
        ids: dict[str, str] = {}
        for now in range(END_S + 1):
            clock.advance(1 if now else 0)
            up = [g for g in OWNERS if g == "a" or not SILENT_FROM_S < now < BACK_AT_S]
            for g in up:
                beat = Heartbeat(
                    pools=[PoolLive(label=str(_label(p.pool_id))) for p in OWNERS[g]],
                    leases=holding[g],
                )
                holding[g] = list(rt.dispatch.heartbeat(gws[g], beat).renewed)
            rt.dispatch.expire()
            for job in (j for j in jobs if j.arrival_s == now):
                spec = task_spec(job, Policy.BALANCED, TOPOLOGY.pools)
                ids[job.job_id] = rt.tasks.submit(spec, job.tenant)[0]
            rt.placer.schedule_pass()
            for g in up:
                holding[g] += [lt.lease_id for lt in rt.dispatch.lease(gws[g], 100)]
            with rt.db.read() as s:
                sick = sorted(
                    str(_label(p.cpi))
                    for p in s.scalars(select(t.Pool))
                    if p.health == PoolHealth.UNHEALTHY.value
                )
                phases: dict[str, tuple[Phase, str | None, int]] = {}
                for job_id, tid in ids.items():
                    row = s.get(t.Task, tid)
                    assert row is not None
                    phases[job_id] = (current_phase(s, row), _label(row.pool_cpi), row.attempt)
            out.append((now, tuple(sick), phases))
    finally:
        rt.federation.peer.close()
        rt.db.dispose()
    return out


def test_the_outage_case_exercises_every_health_decision() -> None:
    """The simulator's timeline on its own (cheap): the silent gateway's pool turns unhealthy
    at 31 s, not 30 s, gives back a placed job, loses its leases at 41 s, not 40 s, and
    takes work again when its gateway is back at 50 s."""
    timeline = _sim_timeline(_outage_jobs())
    gd = str(_label(OWNERS["b"][0].pool_id))
    assert [now for now, sick, _ in timeline if sick] == list(range(31, BACK_AT_S))
    assert all(sick == (gd,) for _, sick, _ in timeline if sick)
    at = {now: phases for now, _, phases in timeline}
    on_gd = {now: {j: p for j, (p, pool, _) in at[now].items() if pool == gd} for now in at}
    assert Phase.PLACED in on_gd[30].values() and Phase.PLACED not in on_gd[31].values()
    assert Phase.LEASED in on_gd[40].values() and not on_gd[41]
    assert any(p is Phase.LEASED and n == 2 for p, pool, n in at[BACK_AT_S].values() if pool == gd)


def test_a_live_node_and_the_simulator_agree_when_a_gateway_goes_silent(tmp_path: Path) -> None:
    """Gateway "b" stops heartbeating at 10 s and is back at 50 s. Second by second, the live
    node (heartbeat, expire, pass and lease calls on a real store) and the simulator (its
    placer's check and rounds, virtual seconds) mark the same pools unhealthy at the same
    times, give back the same placed jobs, lose the same leases and place the same jobs on
    the same pools afterwards, with the same attempt counts. Both decide with
    ``computenet.tasks.health`` and ``computenet.tasks.dispatching``."""
    jobs = _outage_jobs()
    live = _live_timeline(tmp_path, jobs)
    sim = _sim_timeline(jobs)
    for at_live, at_sim in zip(live, sim, strict=True):
        assert at_live == at_sim


def test_the_comparison_catches_a_node_that_drifts_from_the_shared_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the live node to decide silence by its own rule (here: a heartbeat exactly
    ``timeout_s`` old already counts as silent), the timelines would part at 30 s."""

    def at_or_before(now: datetime, timeout_s: float) -> datetime:
        return silence_cutoff(now, timeout_s) + timedelta(microseconds=1)

    def drifted(pools: Any, placed: Any, now: datetime, timeout_s: float) -> Silence:
        return went_silent(pools, placed, now + timedelta(microseconds=1), timeout_s)

    monkeypatch.setattr(dispatch_module, "silence_cutoff", at_or_before)
    monkeypatch.setattr(dispatch_module, "went_silent", drifted)
    jobs = _outage_jobs()
    live = _live_timeline(tmp_path, jobs)
    sim = _sim_timeline(jobs)
    parted = [lv[0] for lv, sm in zip(live, sim, strict=True) if lv != sm]
    assert parted[0] == 30
