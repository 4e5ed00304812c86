"""A node's services under a fake clock with a GPU pool and a running service replica: the
world of the metering tests (helper module, not a test file)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from sqlalchemy import select

from computenet.billing.rating import Tier, Unit
from computenet.model.pool import PoolSpec
from computenet.model.protocol import DeclarePools, TaskReport, UsageReport
from computenet.model.task import TaskSpec, TaskState
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.store.tables_billing import Charge, InterimUsage
from computenet.tasks.clock import FakeClock

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 2}
PRICE = Decimal("7.123457")  # per card-hour
CARDS = 2
INTERVAL_S = 7  # 2 cards x 7 s is 0.00388... card-hours: every interval is rounded
NINE = Decimal("0.000000001")


def card_hours(wall_s: Decimal) -> Decimal:
    """What CARDS cards held for ``wall_s`` are, rounded as the node rounds usage."""
    return (CARDS * wall_s / 3600).quantize(NINE, rounding=ROUND_HALF_EVEN)


def node(data_dir: Path, code: str, clock: FakeClock) -> Iterator[NodeRuntime]:
    """A bootstrapped node's runtime (no loops running), closed after the test."""
    runtime = NodeRuntime(NodeSettings(data_dir=data_dir, node_code=code), clock)
    runtime.bootstrap()
    yield runtime
    runtime.federation.peer.close()
    runtime.db.dispose()


def gateway(rt: NodeRuntime, clock: FakeClock) -> str:
    prefix, token = rt.enrol_provider("gz", "")
    assert rt.auth.redeem_enrolment(token) == prefix
    gid = rt.dispatch.register_gateway(prefix, "gz-gw")
    pool = PoolSpec.model_validate(
        {"label": "a100", "cpu_cores": 8, "memory_mib": 65536, "accelerator": A100}
    )
    rt.dispatch.declare_pools(gid, DeclarePools(pools=[pool]))
    since = clock.now - timedelta(hours=1)
    rt.ledger.add_price("*", Tier.ON_DEMAND, Unit.CARD_HOUR, PRICE, effective_from=since)
    return gid


def replica_spec(name: str = "web") -> TaskSpec:
    """A replica task of service ``name``, as a controller at cn.31 makes it."""
    return TaskSpec.model_validate(
        {
            "name": f"service/{name}/1/0",
            "executors": [{"command": ["serve"]}],
            "resources": {"accelerator": {"count": CARDS}, "time_limit_s": 86400},
            "service": {"name": name, "replica": 0, "home_node": "cn.31"},
        }
    )


def run_replica(
    rt: NodeRuntime, gid: str, owner: str = "acme/alice", tenant: str = "acme"
) -> tuple[str, str]:
    """Submit a replica task, lease it and report it running; return (task id, lease id)."""
    tid = rt.tasks.submit(replica_spec(), owner, tenant=tenant)[0]
    assert rt.placer.schedule_pass() == 1
    [lease] = rt.dispatch.lease(gid, 5)
    assert lease.task_id == tid
    rt.dispatch.report(gid, tid, TaskReport(lease_id=lease.lease_id, state=TaskState.RUNNING))
    return tid, lease.lease_id


def finish(rt: NodeRuntime, gid: str, tid: str, lease_id: str, wall_s: Decimal) -> None:
    """The gateway reports the attempt complete, having run ``wall_s``."""
    usage = UsageReport(wall_s=wall_s, cpu_cores=8, memory_mib=65536, cards=CARDS)
    rep = TaskReport(lease_id=lease_id, state=TaskState.COMPLETE, usage=usage)
    rt.dispatch.report(gid, tid, rep)


def charges(rt: NodeRuntime, tid: str) -> list[Charge]:
    """A task's charges, the closing one first, then its intervals."""
    with rt.db.read() as s:
        return list(
            s.scalars(select(Charge).where(Charge.task_id == tid).order_by(Charge.interval_index))
        )


def interim(rt: NodeRuntime, tid: str) -> list[InterimUsage]:
    """A task's interim usage rows, by interval."""
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(InterimUsage)
                .where(InterimUsage.task_id == tid)
                .order_by(InterimUsage.interval_index)
            )
        )
