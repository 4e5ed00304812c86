"""The service directory (``rt.services``), as the router reads it: services deployed here
and replicas of other nodes' services forwarded here, each with where it runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from computenet.model.pool import PoolSpec, Region
from computenet.model.service import ServiceSpec, key_hash
from computenet.model.task import TaskState
from computenet.store import tables as t
from computenet.store.tables_federation import FedForward, FedPool
from nodeapi import World, running_world

SPEC = ServiceSpec.model_validate({"name": "lm", "executor": {"command": ["python3", "s.py"]}})
NOW = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn", services_reconcile_s=3600) as w:
        yield w


def test_a_replica_forwarded_to_a_child_is_listed_under_that_node(world: World) -> None:
    w = world
    r = w.client.post("/api/v1/services", json=SPEC.model_dump(mode="json"), headers=w.admin)
    assert r.status_code == 201, r.text
    [queued] = w.rt.services.replicas("lm")  # no pool yet: it waits
    assert (queued.node_code, queued.region, queued.gateway_id) == ("cn", None, None)
    remote = PoolSpec(
        label="gpu", cpu_cores=8, memory_mib=8192, region=Region(code="31"),
        price_per_card_hour=Decimal("1.5"),
    )  # fmt: skip
    with w.rt.db.write() as s:
        s.add(
            FedPool(
                cpi="cn.sh/acme/gpu", owner="cn.sh", via="cn.sh", url="http://sh",
                record={"spec": remote.model_dump(mode="json")}, health="healthy", seq=1,
                updated_at=NOW,
            )
        )  # fmt: skip
        s.add(
            FedForward(
                task_id=queued.task_id, target="cn.sh", target_url="http://sh",
                pool_cpi="cn.sh/acme/gpu", state="confirmed", created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip
        row = s.get(t.Task, queued.task_id)
        row.pool_cpi, row.state = "cn.sh/acme/gpu", TaskState.RUNNING.value
    w.rt.services.invalidate()
    [there] = w.rt.services.replicas("lm")
    assert (there.node_code, there.region, there.gateway_id) == ("cn.sh", "31", None)
    assert there.price_per_card_hour == Decimal("1.5")
    view = w.rt.services.find("lm")
    assert view is not None and list(view.key_hashes) == there.binding.key_hashes


def test_a_replica_of_another_nodes_service_is_listed_with_its_own_binding(world: World) -> None:
    w = world
    # What the federation does when the home node forwards a replica here.
    task = SPEC.replica_task(3, [key_hash("their-key")], "cn.home", 3600)
    w.rt.tasks.submit(task, "admin:root", tid="cnhome-01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert w.rt.services.find("lm") is None  # not deployed here...
    [p] = w.rt.services.replicas("lm")  # ...but its replica runs under this node
    assert p.binding.home_node == "cn.home" and p.replica == 3 and p.node_code == "cn"
    assert p.binding.key_hashes == [key_hash("their-key")]
    # A user's task that merely has a replica's name is not a replica.
    w.submit(w.admin, {"name": "service/lm/1/9", "executors": [{"command": ["true"]}]})
    w.rt.services.invalidate()
    assert [x.replica for x in w.rt.services.replicas("lm")] == [3]
