"""The console's usage series: each caller's own usage, costed from the ledger's charges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from computenet.billing.metering import Meter
from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.store.tables_billing import Charge
from computenet.tasks.clock import FakeClock
from nodeapi import World, auth, running_world
from replicaworld import PRICE, card_hours, finish, gateway, run_replica

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 2}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn.44") as w:
        yield w


def _run(world: World, gw: dict[str, str], who: dict[str, str], wall_s: str) -> str:
    tid = world.submit(who, {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1}})
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    usage = {"wall_s": wall_s, "cpu_cores": 1, "memory_mib": 954, "cards": 0}
    world.report(gw, lease, "COMPLETE", usage=usage)
    return tid


def _series(world: World, who: dict[str, str]) -> dict[str, Any]:
    r = world.client.get("/api/v1/console/usage", params={"bucket_s": 86400}, headers=who)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _charged(world: World, owner: str | None = None) -> Decimal:
    with world.rt.db.read() as s:
        q = select(Charge.amount)
        if owner is not None:
            q = q.where(Charge.owner == owner)
        return sum(s.scalars(q), Decimal(0))


def test_usage_is_per_caller_and_costed_from_the_ledger(world: World) -> None:
    alice = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    bob = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    gw = world.gateway("prov", price_per_core_hour="1.234567", accelerator=A100)
    _run(world, gw, alice, "900.5")
    _run(world, gw, bob, "1800")
    # A reservation cancelled inside its window is charged at once: its cost shows too.
    rsv = {"model": "A100", "cards": 1, "starts_at": datetime.now(UTC).isoformat()}
    r = world.client.post("/api/v1/reservations", json={**rsv, "duration_s": 60}, headers=alice)
    assert r.status_code == 201, r.text
    time.sleep(0.2)
    assert world.client.delete(f"/api/v1/reservations/{r.json()['id']}", headers=alice).is_success

    mine = _series(world, alice)["points"]
    assert sum(p["tasks"] for p in mine) == 1
    assert sum(Decimal(p["cost"]) for p in mine) == _charged(world, "acme/alice") > 0
    everyone = _series(world, world.admin)["points"]
    assert sum(p["tasks"] for p in everyone) == 2
    assert sum(Decimal(p["cost"]) for p in everyone) == _charged(world)
    assert _charged(world) > _charged(world, "acme/alice")


def test_a_running_replica_shows_as_it_runs_and_is_never_counted_twice(tmp_path: Path) -> None:
    """Issue 18: a replica's billed intervals are points of the usage series while it runs;
    once it ends, its usage record adds only what the intervals had not billed."""
    clock = FakeClock()
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn.44"), clock)
    admin = rt.bootstrap().admin_token
    assert admin is not None
    client = TestClient(create_app(rt))  # no lifespan: the test runs the metering rounds
    gid = gateway(rt, clock)
    tid, lease = run_replica(rt, gid)

    def totals() -> tuple[Decimal, Decimal]:
        r = client.get("/api/v1/console/usage", params={"bucket_s": 86400}, headers=auth(admin))
        assert r.status_code == 200, r.text
        pts = r.json()["points"]
        by = client.get(
            "/api/v1/console/usage/by", params={"bucket_s": 86400}, headers=auth(admin)
        ).json()
        cost_by = sum(Decimal(str(v)) for g in by["groups"] for v in g["cost"])
        cost = sum((Decimal(str(p["cost"])) for p in pts), Decimal(0))
        assert cost == cost_by
        return sum((Decimal(str(p["card_hours"])) for p in pts), Decimal(0)), cost

    clock.advance(3600)
    assert Meter(rt.db, rt.ledger, 600, clock, lambda: {tid: 5}).tick() == 6
    assert totals() == (card_hours(Decimal(3600)), card_hours(Decimal(3600)) * PRICE)
    # The requests it served, on the usage page's table.
    r = client.get("/api/v1/console/service-requests", headers=auth(admin))
    assert r.status_code == 200 and r.json() == [
        {"service": "web", "tenant": "acme", "requests": 5}
    ]
    minted = client.post(
        "/api/v1/tokens", json={"role": "user", "subject": "bob"}, headers=auth(admin)
    )
    bob = auth(minted.json()["token"])
    assert client.get("/api/v1/console/service-requests", headers=bob).json() == []
    clock.advance(1000.25)
    finish(rt, gid, tid, lease, Decimal("4600.25"))
    total = card_hours(Decimal("4600.25"))
    assert totals() == (total, total * PRICE)
    rt.federation.peer.close()
    rt.db.dispose()
