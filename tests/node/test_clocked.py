"""A node's services driven directly: time under a fake clock, without sleeping (a
reservation window opening and closing, a forward the owner never confirms being
withdrawn), pool capabilities reaching the scheduler, and the gateway protocol version.

Every node service reads the clock the runtime is given (``NodeRuntime(settings, clock)``),
so moving a :class:`FakeClock` moves the node's idea of now everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from computenet.billing.rating import Tier, Unit
from computenet.billing.reservations import ReservationRequest
from computenet.errors import InvalidInput
from computenet.model.pool import PoolSpec
from computenet.model.protocol import DeclarePools, Heartbeat, PoolLive
from computenet.model.task import TaskSpec
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.store import tables as t
from computenet.store.tables_federation import FedPool
from computenet.tasks.clock import FakeClock
from computenet.tasks.lifecycle import Event, Phase
from computenet.tasks.transitions import move_by_id

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 2}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rt(tmp_path: Path, clock: FakeClock) -> Iterator[NodeRuntime]:
    settings = NodeSettings(data_dir=tmp_path, node_code="cn.31", fed_timeout_s=5.0)
    runtime = NodeRuntime(settings, clock)
    runtime.bootstrap()
    yield runtime
    runtime.federation.peer.close()
    runtime.db.dispose()


def _gpu_task(limit_s: int) -> TaskSpec:
    res: dict[str, Any] = {"accelerator": {"count": 2}, "time_limit_s": limit_s}
    return TaskSpec.model_validate({"executors": [{"command": ["true"]}], "resources": res})


def _task(rt: NodeRuntime, tid: str) -> t.Task:
    with rt.db.read() as s:
        row = s.get(t.Task, tid)
        assert row is not None
        return row


def test_a_reservation_window_opens_and_closes_on_the_clock(
    rt: NodeRuntime, clock: FakeClock
) -> None:
    prefix, token = rt.enrol_provider("gpu", "")
    assert rt.auth.redeem_enrolment(token) == prefix
    gid = rt.dispatch.register_gateway(prefix, "gpu-gw")
    pool = PoolSpec.model_validate(
        {"label": "a100", "cpu_cores": 8, "memory_mib": 65536, "accelerator": A100}
    )
    rt.dispatch.declare_pools(gid, DeclarePools(pools=[pool]))
    start = clock.now - timedelta(hours=1)
    rt.ledger.add_price("*", Tier.RESERVED, Unit.CARD_HOUR, Decimal("6.25"), effective_from=start)
    opens, closes = clock.now + timedelta(seconds=100), clock.now + timedelta(seconds=200)
    rsv = rt.reservations.book(ReservationRequest("A100", 2, opens, closes), "alice", "acme")

    # Before the window: bob's hour-long task would run into it, so it waits and says why.
    bob = rt.tasks.submit(_gpu_task(3600), "bob", tenant="globex")[0]
    assert rt.placer.schedule_pass() == 0
    assert "reserved" in _task(rt, bob).reason

    # Inside it: acme's task gets the cards; bob's still waits.
    clock.advance(150)
    mine = rt.tasks.submit(_gpu_task(10), "alice", tenant="acme")[0]
    assert rt.placer.schedule_pass() == 1
    assert _task(rt, mine).reservation_id == rsv.id
    assert _task(rt, bob).pool_cpi is None
    [lease] = rt.dispatch.lease(gid, 5)
    assert lease.task_id == mine

    # After it: the window is charged, and bob's task may have the cards once acme's ends.
    assert rt.reservations.settle_due() == 0
    clock.advance(51)
    assert rt.reservations.settle_due() == 1
    rt.tasks.cancel(mine)
    clock.advance(31)  # the canceled lease expires: the cards are free
    rt.dispatch.expire()
    rt.dispatch.heartbeat(gid, Heartbeat(pools=[PoolLive(label="a100")]))
    assert rt.placer.schedule_pass() == 1
    assert _task(rt, bob).pool_cpi == "cn.31/gpu/a100"


def test_an_unconfirmed_forward_is_withdrawn_after_the_timeout(
    rt: NodeRuntime, clock: FakeClock
) -> None:
    with rt.db.write() as s:
        s.add(
            FedPool(
                cpi="cn.52/far/cpu",
                owner="cn.52",
                via="cn.52",
                url="http://127.0.0.1:9",  # nothing listens: the owner never confirms
                record={},
                health="healthy",
                seq=1,
                updated_at=clock.now,
            )
        )
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    tid = rt.tasks.submit(spec, "alice")[0]
    with rt.db.write() as s:  # as the scheduler places a task on a remote pool
        placed = move_by_id(
            s, tid, Phase.WAITING, Event.PLACED, clock.now, "placed", pool_cpi="cn.52/far/cpu"
        )
        assert placed
    forwarder = rt.federation.forwarder
    forwarder.tick()
    assert "forwarded to node cn.52" in [e.message for e in rt.tasks.get(tid).events]
    clock.advance(4.9)
    forwarder.tick()
    assert _task(rt, tid).pool_cpi == "cn.52/far/cpu"
    clock.advance(0.2)
    forwarder.tick()
    row = _task(rt, tid)
    assert row.state == "QUEUED" and row.pool_cpi is None
    assert row.reason == "re-queued: node cn.52 did not confirm within 5 s"


def test_a_pool_that_cannot_stage_never_leases_a_task_with_inputs(rt: NodeRuntime) -> None:
    """The gateway's declared capabilities reach the node's scheduler and its explain."""
    why = "the slurm backend does not stage inputs or outputs yet"
    prefix, token = rt.enrol_provider("hpc", "")
    assert rt.auth.redeem_enrolment(token) == prefix
    gid = rt.dispatch.register_gateway(prefix, "hpc-gw")
    pool = PoolSpec.model_validate(
        {"label": "debug", "cpu_cores": 8, "memory_mib": 8192, "unsupported": {"staging": why}}
    )
    rt.dispatch.declare_pools(gid, DeclarePools(pools=[pool]))
    staged = TaskSpec.model_validate(
        {
            "executors": [{"command": ["cat", "/in.txt"]}],
            "inputs": [{"path": "/in.txt", "content": "data"}],
        }
    )
    tid = rt.tasks.submit(staged, "alice")[0]
    plain = rt.tasks.submit(TaskSpec.model_validate({"executors": [{"command": ["true"]}]}), "bob")
    assert rt.placer.schedule_pass() == 1  # only the task with nothing to stage
    [lease] = rt.dispatch.lease(gid, 5)
    assert lease.task_id == plain[0]
    assert _task(rt, tid).attempt == 0  # no attempt burnt
    assert f"staging ({why})" in _task(rt, tid).reason
    ex = rt.sched.explain(tid, None)
    assert ex.excluded == {"capability": 1} and why in ex.reason


def test_a_gateway_of_another_protocol_version_is_refused(rt: NodeRuntime) -> None:
    prefix, token = rt.enrol_provider("old", "")
    assert rt.auth.redeem_enrolment(token) == prefix
    gid = rt.dispatch.register_gateway(prefix, "old-gw")
    pool = PoolSpec(label="cpu", cpu_cores=1, memory_mib=1024)
    with pytest.raises(InvalidInput, match="speaks gateway protocol 2; this side speaks 1"):
        rt.dispatch.declare_pools(gid, DeclarePools(pools=[pool], protocol=2))
    assert rt.dispatch.pool_rows() == []
