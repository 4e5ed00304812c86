"""Weighted fair share, quotas, priorities, gang placement and preemption in the pure core."""

from __future__ import annotations

from collections import Counter

from sched_helpers import gpu_pool, gpu_task

from computenet.model.pool import Capacity
from computenet.sched.core import Context, RunningTask, TenantShare, schedule


def _backlog(tenant: str, n: int, start: int) -> list:  # type: ignore[type-arg]
    return [gpu_task(f"{tenant}{i}", tenant=tenant, seq=start + i) for i in range(n)]


def _granted(decisions: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(d.task_id.rstrip("0123456789") for d in decisions if d.pool)


def test_fair_share_converges_to_the_weights() -> None:
    pools = [gpu_pool(f"cn/p/p{i}", cards=10) for i in range(3)]  # 30 cards
    tasks = _backlog("a", 100, 0) + _backlog("b", 100, 1000)  # a submitted everything first
    ctx = Context(tenants={"a": TenantShare(weight=2), "b": TenantShare(weight=1)})
    assert _granted(schedule(tasks, pools, ctx)) == {"a": 20, "b": 10}


def test_fair_share_counts_what_tenants_already_hold() -> None:
    pools = [gpu_pool("cn/p/p", cards=20)]
    tasks = _backlog("a", 50, 0) + _backlog("b", 50, 100)
    ctx = Context(tenants={"a": TenantShare(usage=10), "b": TenantShare(usage=0)})
    # equal weights: the 20 free cards bring both to 15
    assert _granted(schedule(tasks, pools, ctx)) == {"a": 5, "b": 15}


def test_fair_share_over_rounds_tracks_weights() -> None:
    """Round after round, holdings approach the 3:1 weights as cards free up."""
    weights = {"a": 3.0, "b": 1.0}
    held = {"a": 0.0, "b": 0.0}
    for _ in range(10):
        # each round 8 cards are free; each tenant's earlier grants are its usage
        ctx = Context(tenants={k: TenantShare(weight=w, usage=held[k]) for k, w in weights.items()})
        got = _granted(
            schedule(_backlog("a", 20, 0) + _backlog("b", 20, 100), [gpu_pool("cn/p/p")], ctx)
        )
        for k in held:
            held[k] += got[k]
    assert held["a"] / held["b"] == 3.0


def test_quota_caps_a_tenant() -> None:
    tasks = _backlog("a", 10, 0)
    ctx = Context(tenants={"a": TenantShare(quota=3)})
    decisions = schedule(tasks, [gpu_pool("cn/p/p")], ctx)
    assert _granted(decisions) == {"a": 3}
    assert "tenant a is at its quota" in decisions[-1].reason


def test_priority_goes_before_fair_share() -> None:
    tasks = [
        gpu_task("low", 8, tenant="a", seq=0),
        gpu_task("high", 8, tenant="b", priority=5, seq=1),
    ]
    ctx = Context(tenants={"a": TenantShare(weight=100)})
    placed = [d.task_id for d in schedule(tasks, [gpu_pool("cn/p/p")], ctx) if d.pool]
    assert placed == ["high"]


def test_gang_needs_all_cards_in_one_pool() -> None:
    split = [gpu_pool("cn/p/a", free_cards=4), gpu_pool("cn/p/b", free_cards=4)]
    [d] = schedule([gpu_task("gang", 8)], split)
    assert d.pool is None and "waiting for capacity on 2 eligible pools" in d.reason
    [d] = schedule([gpu_task("gang", 8)], [*split, gpu_pool("cn/p/c")])
    assert d.pool == "cn/p/c"
    [d] = schedule([gpu_task("gang", 16)], split)  # more cards than any pool has
    assert d.pool is None and "no pool has 16 accelerator cards in one pool" in d.reason


def test_gang_spans_machines_of_one_pool() -> None:
    [d] = schedule([gpu_task("gang", 16)], [gpu_pool("cn/p/two", machines=2)])
    assert d.pool == "cn/p/two"


def _spot(tid: str, cards: int, priority: int = 0) -> RunningTask:
    return RunningTask(
        tid,
        "cn/p/full",
        Capacity(cpu_cores=1, memory_mib=1024, accelerators=cards),
        preemptible=True,
        priority=priority,
    )


def test_on_demand_work_preempts_spot_work() -> None:
    full = [gpu_pool("cn/p/full", free_cards=0)]
    ctx = Context(running=[_spot("s1", 4), _spot("s2", 4)])
    [d] = schedule([gpu_task("od", 4)], full, ctx)
    assert d.pool == "cn/p/full" and d.preempt == ("s1",)  # one is enough
    [d] = schedule([gpu_task("od", 8)], full, ctx)
    assert d.preempt == ("s1", "s2")


def test_spot_work_does_not_preempt() -> None:
    ctx = Context(running=[_spot("s1", 8)])
    [d] = schedule(
        [gpu_task("spot", 4, resources={"preemptible": True})],
        [gpu_pool("cn/p/full", free_cards=0)],
        ctx,
    )
    assert d.pool is None and d.preempt == ()


def test_preemption_spares_higher_priority_and_on_demand_work() -> None:
    full = [gpu_pool("cn/p/full", free_cards=0)]
    on_demand = RunningTask("od", "cn/p/full", Capacity(accelerators=4), preemptible=False)
    ctx = Context(running=[_spot("vip", 4, priority=9), on_demand])
    [d] = schedule([gpu_task("t", 4)], full, ctx)
    assert d.pool is None


def test_each_victim_is_preempted_once_per_round() -> None:
    ctx = Context(running=[_spot("s1", 8)])
    ds = schedule(
        [gpu_task("a", 8, seq=0), gpu_task("b", 8, seq=1)],
        [gpu_pool("cn/p/full", free_cards=0)],
        ctx,
    )
    assert [(d.task_id, d.preempt) for d in ds if d.pool] == [("a", ("s1",))]
