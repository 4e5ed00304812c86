"""The service controller behind /api/v1/services on a real in-process node: replica tasks
made, placed by the scheduler (spread over regions), scaled, rolled, deleted, keyed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.services.controller import ServiceController
from computenet.node.settings import NodeSettings
from computenet.store import tables as t
from computenet.store.tables_billing import Charge
from nodeapi import World, auth

SERVICE = {
    "name": "echo",
    "executor": {"command": ["python3", "-m", "http.server"]},
    "replicas": {"min": 2, "max": 4},
}


class Clock:
    """The controller's time, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, s: float) -> None:
        self.now += timedelta(seconds=s)


@dataclass
class Load:
    in_flight: int = 0
    requests_per_s: float = 0.0
    tokens_per_s: float | None = None
    per_replica: dict[str, int] = field(default_factory=dict)


@dataclass
class Plane:
    """Stands in for the routing layer's metric plane (another branch builds it)."""

    load: Load = field(default_factory=Load)
    healthy_ids: set[str] = field(default_factory=set)

    def healthy(self, task_id: str) -> bool:
        return task_id in self.healthy_ids

    def service_load(self, name: str) -> Load:
        return self.load


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Clock]]:
    clock = Clock()
    settings = NodeSettings(
        data_dir=tmp_path, node_code="cn", housekeeping_s=0.2, services_reconcile_s=3600
    )
    rt = NodeRuntime(settings, clock=clock)
    admin = rt.bootstrap().admin_token
    assert admin is not None
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield World(client, rt, auth(admin)), clock


def wait_placed(w: World, n: int) -> list[Any]:
    """Until ``n`` replicas have a pool (the scheduler runs in the node's loop)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        w.rt.service_controller.reconcile_all()
        reps = w.client.get("/api/v1/services/echo", headers=w.admin).json()["replicas"]
        if len([r for r in reps if r.get("pool")]) >= n:
            return list(reps)
        time.sleep(0.05)
    raise AssertionError(f"{n} replicas not placed: {reps}")


def test_deploy_spreads_replicas_over_regions_and_binds_them(world: tuple[World, Clock]) -> None:
    w, clock = world
    w.gateway("north", region={"code": "11"})
    w.gateway("east", region={"code": "31"})
    user = w.mint(role="user", subject="ann")
    r = w.client.post("/api/v1/services", json=SERVICE, headers=user["auth"])
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert key.startswith("cnsk_")
    # The first replica goes out; the second waits to see where, then keeps off its region.
    reps = wait_placed(w, 1)
    clock.advance(1)
    reps = wait_placed(w, 2)
    assert sorted(r["region"] for r in reps) == ["11", "31"]
    assert sorted(r["replica"] for r in reps) == [0, 1]
    task = w.client.get(f"/api/v1/tasks/{reps[0]['task_id']}", headers=user["auth"]).json()
    spec = task["spec"]
    assert spec["service"]["key_hashes"] == [hashlib.sha256(key.encode()).hexdigest()]
    assert spec["executors"][0]["env"]["PORT"] == str(spec["service"]["port"])
    assert spec["resources"]["time_limit_s"] > 0
    # The directory shows the same, as the router will read it.
    found = w.rt.services.replicas("echo")
    assert {p.task_id for p in found} == {r["task_id"] for r in reps}
    view = w.rt.services.find("echo")
    assert view is not None and view.desired == 2 and view.tenant.endswith("ann")
    # Another user neither sees nor touches it.
    bob = w.mint(role="user", subject="bob")
    assert w.client.get("/api/v1/services/echo", headers=bob["auth"]).status_code == 404
    assert w.client.get("/api/v1/services", headers=bob["auth"]).json() == []
    assert w.client.delete("/api/v1/services/echo", headers=bob["auth"]).status_code == 404


def test_scale_down_cancels_and_an_ended_replica_is_replaced(world: tuple[World, Clock]) -> None:
    w, _clock = world
    gw = w.gateway("north", cpu_cores=8)
    r = w.client.post("/api/v1/services", json=SERVICE, headers=w.admin)
    assert r.status_code == 201, r.text
    reps = wait_placed(w, 1)
    reps = wait_placed(w, 2)  # one region only: no waiting to spread
    first = w.lease(gw)
    w.report(gw, first, "RUNNING")
    # The replica's task ends (its server died): the controller starts another.
    w.report(gw, first, "EXECUTOR_ERROR")
    w.rt.service_controller.reconcile_all()
    live = w.client.get("/api/v1/services/echo", headers=w.admin).json()
    assert live["live"] == 2
    assert first["task_id"] not in {x["task_id"] for x in live["replicas"]}
    # Scale to exactly one: the extra is cancelled.
    r = w.client.post("/api/v1/services/echo/scale", json={"min": 1, "max": 1}, headers=w.admin)
    assert r.status_code == 200, r.text
    assert r.json()["desired"] == 1
    left = [x for x in r.json()["replicas"] if x["state"] not in ("CANCELING", "CANCELED")]
    assert len(left) == 1
    # Bounds are checked like the service file's.
    bad = w.client.post("/api/v1/services/echo/scale", json={"min": 3, "max": 2}, headers=w.admin)
    assert bad.status_code == 400 and "must not exceed" in bad.json()["message"]
    assert len(reps) == 2


def test_rolling_update_retires_old_replicas_only_once_new_ones_are_healthy(
    world: tuple[World, Clock],
) -> None:
    w, _clock = world
    plane = Plane()
    w.rt.service_controller.plane = lambda: plane  # the load and health this test sets
    gw = w.gateway("north", cpu_cores=8)
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    assert w.client.post("/api/v1/services", json=one, headers=w.admin).status_code == 201
    old = wait_placed(w, 1)[0]["task_id"]
    # Same version, other spec: refused with the way out.
    other = {**one, "executor": {"command": ["python3", "other.py"]}}
    r = w.client.post("/api/v1/services", json=other, headers=w.admin)
    assert r.status_code == 409 and "new version" in r.json()["message"]
    r = w.client.post("/api/v1/services", json={**other, "version": "2"}, headers=w.admin)
    assert r.status_code == 200 and r.json()["rolling"], r.text
    w.rt.service_controller.reconcile_all()
    reps = w.client.get("/api/v1/services/echo", headers=w.admin).json()["replicas"]
    new = next(x["task_id"] for x in reps if x["version"] == "2")
    # Not healthy yet: the old one keeps serving.
    assert {x["task_id"] for x in reps} == {old, new}
    w.report(gw, w.lease(gw), "RUNNING")  # the old one, leased first
    w.report(gw, w.lease(gw), "RUNNING")  # the new one
    w.rt.service_controller.reconcile_all()
    states = {
        x["task_id"]: x["state"]
        for x in w.client.get("/api/v1/services/echo", headers=w.admin).json()["replicas"]
    }
    assert states[old] not in ("CANCELED", "CANCELING")  # running but not yet healthy
    plane.healthy_ids.add(new)
    w.rt.service_controller.reconcile_all()
    states = {
        x["task_id"]: x["state"]
        for x in w.client.get("/api/v1/services/echo", headers=w.admin).json()["replicas"]
    }
    assert old not in states or states[old] in ("CANCELED", "CANCELING")
    assert states[new] == "RUNNING"


def test_autoscaler_reads_the_metric_plane(world: tuple[World, Clock]) -> None:
    w, clock = world
    plane = Plane()
    w.rt.service_controller.plane = lambda: plane  # the load and health this test sets
    w.gateway("north", cpu_cores=8)
    svc = {
        **SERVICE,
        "replicas": {
            "min": 1,
            "max": 3,
            "target_inflight": 2,
            "scale_up_window_s": 5,
            "scale_down_delay_s": 20,
        },
    }
    assert w.client.post("/api/v1/services", json=svc, headers=w.admin).status_code == 201
    ctl = w.rt.service_controller
    plane.load = Load(in_flight=6)  # 3x target on one replica
    for _ in range(7):
        clock.advance(1)
        ctl.reconcile("echo")
    status = w.client.get("/api/v1/services/echo", headers=w.admin).json()
    assert status["desired"] == 3 and status["live"] == 3
    assert status["load"]["in_flight"] == 6
    plane.load = Load(in_flight=0)
    for _ in range(25):
        clock.advance(1)
        ctl.reconcile("echo")
    assert w.client.get("/api/v1/services/echo", headers=w.admin).json()["desired"] == 2


def test_budget_spent_refuses_deploy(world: tuple[World, Clock]) -> None:
    w, _clock = world
    w.gateway("north")
    user = w.mint(role="user", subject="ann", tenant="acme")
    w.rt.ledger.set_budget("acme", Decimal(0))
    r = w.client.post("/api/v1/services", json=SERVICE, headers=user["auth"])
    assert r.status_code == 402, r.text
    assert "budget" in r.json()["message"]


def test_keys_delete_and_logs(world: tuple[World, Clock]) -> None:
    w, _clock = world
    gw = w.gateway("north", cpu_cores=8)
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    first = w.client.post("/api/v1/services", json=one, headers=w.admin).json()["key"]
    made = w.client.post("/api/v1/services/echo/keys", headers=w.admin)
    assert made.status_code == 201
    second = made.json()["key"]
    keys = w.client.get("/api/v1/services/echo/keys", headers=w.admin).json()
    assert len(keys) == 2 and all("key" not in k for k in keys)
    hashes = set(w.rt.services.find("echo").key_hashes)  # type: ignore[union-attr]
    assert hashes == {hashlib.sha256(k.encode()).hexdigest() for k in (first, second)}
    r = w.client.delete(f"/api/v1/services/echo/keys/{made.json()['id']}", headers=w.admin)
    assert r.status_code == 204
    wait_placed(w, 1)
    binding = w.rt.services.replicas("echo")[0].binding
    assert binding.key_hashes == [hashlib.sha256(first.encode()).hexdigest()]
    lease = w.lease(gw)
    w.report(
        gw,
        lease,
        "RUNNING",
        executors=[{"index": 0, "stdout": {"offset": 0, "data": "serving on 8080\n"}}],
    )
    logs = w.client.get("/api/v1/services/echo/logs?replica=0", headers=w.admin)
    assert logs.status_code == 200, logs.text
    assert "serving on 8080" in logs.json()["attempts"][0]["executors"][0]["stdout"]
    # Delete: the replica is cancelled, and once its task ends the service is gone.
    assert w.client.delete("/api/v1/services/echo", headers=w.admin).status_code == 202
    again = w.client.post("/api/v1/services", json=one, headers=w.admin)
    assert again.status_code == 409 and "being deleted" in again.json()["message"]
    w.report(gw, lease, "CANCELED")
    w.rt.service_controller.reconcile_all()
    assert w.client.get("/api/v1/services/echo", headers=w.admin).status_code == 404
    assert w.rt.services.replicas("echo") == []


def test_a_replica_near_its_time_limit_is_replaced_and_billed(
    world: tuple[World, Clock],
) -> None:
    w, clock = world
    gw = w.gateway("north", cpu_cores=8, price_per_core_hour="2")
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}, "resources": {"time_limit_s": 3600}}
    assert w.client.post("/api/v1/services", json=one, headers=w.admin).status_code == 201
    old = wait_placed(w, 1)[0]["task_id"]
    lease = w.lease(gw)
    w.report(gw, lease, "RUNNING")

    # Moving the node's clock an hour on would expire the gateway's leases: instead the
    # replica started earlier.
    def started(ago_s: float) -> None:
        with w.rt.db.write() as s:
            s.get(t.Task, old).started_at = clock.now - timedelta(seconds=ago_s)

    started(3600 - 400)  # not yet inside the last 10 % (6 min) of its hour
    w.rt.service_controller.reconcile_all()
    assert len(w.rt.services.replicas("echo")) == 1
    started(3600 - 300)  # now it is: a successor starts, and the old one keeps serving
    w.rt.service_controller.reconcile_all()
    reps = {p.task_id: p.state for p in w.rt.services.replicas("echo")}
    assert len(reps) == 2 and reps[old] == "RUNNING"
    successor = w.lease(gw)
    w.report(gw, successor, "RUNNING")
    # The old one retires once the successor passes its health checks (no tunnel here: the
    # test says so through the controller's plane).
    plane = Plane(healthy_ids={successor["task_id"]})
    w.rt.service_controller.plane = lambda: plane
    w.rt.service_controller.reconcile_all()
    reps = {p.task_id: p.state for p in w.rt.services.replicas("echo")}
    assert reps[old] == "CANCELING"
    # The old replica's gateway stops it and reports its usage: it is on the bill.
    usage = {"wall_s": "3300", "cpu_cores": 1, "memory_mib": 954, "cards": 0}
    w.report(gw, lease, "CANCELED", usage=usage)
    task = w.client.get(f"/api/v1/tasks/{old}", headers=w.admin).json()
    assert task["state"] == "CANCELED" and task["usage"], task
    with w.rt.db.read() as s:
        charge = s.query(Charge).filter(Charge.task_id == old).one()
    assert charge.amount > 0


def test_a_crash_looping_replica_backs_off(world: tuple[World, Clock]) -> None:
    w, clock = world
    gw = w.gateway("north", cpu_cores=8)
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    assert w.client.post("/api/v1/services", json=one, headers=w.admin).status_code == 201
    ctl = w.rt.service_controller
    for _ in range(3):  # three replicas die at once: each is replaced straight away
        wait_placed(w, 1)
        lease = w.lease(gw)
        w.report(gw, lease, "RUNNING")
        w.report(gw, lease, "EXECUTOR_ERROR")
        clock.advance(1)
        ctl.reconcile_all()
    assert w.rt.services.replicas("echo") == []  # the fourth waits...
    status = w.client.get("/api/v1/services/echo", headers=w.admin).json()
    assert "keep failing" in status["note"] and "starts in 9 s" in status["note"]
    clock.advance(8)
    ctl.reconcile_all()
    assert w.rt.services.replicas("echo") == []
    clock.advance(1)
    ctl.reconcile_all()
    assert len(w.rt.services.replicas("echo")) == 1  # ...then starts


def test_no_scale_up_once_the_budget_is_spent(world: tuple[World, Clock]) -> None:
    w, clock = world
    plane = Plane(load=Load(in_flight=50))
    w.rt.service_controller.plane = lambda: plane  # the load and health this test sets
    w.gateway("north", cpu_cores=8)
    user = w.mint(role="user", subject="ann", tenant="acme")
    svc = {**SERVICE, "replicas": {"min": 1, "max": 3, "scale_up_window_s": 2}}
    svc["resources"] = {"time_limit_s": 3600}
    assert w.client.post("/api/v1/services", json=svc, headers=user["auth"]).status_code == 201
    w.rt.ledger.set_budget("acme", Decimal(0))
    for _ in range(4):
        clock.advance(1)
        w.rt.service_controller.reconcile("echo")
    status = w.client.get("/api/v1/services/echo", headers=user["auth"]).json()
    assert status["desired"] == 1 and "spent its budget" in status["note"], status
    # Raising min is a scale-up too.
    r = w.client.post("/api/v1/services/echo/scale", json={"min": 2}, headers=user["auth"])
    assert r.status_code == 402, r.text


def test_another_tenant_cannot_read_a_services_metric_plane(world: tuple[World, Clock]) -> None:
    w, _clock = world
    alice = w.mint(role="user", subject="alice", tenant="acme")["auth"]
    bob = w.mint(role="user", subject="bob", tenant="globex")["auth"]
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    assert w.client.post("/api/v1/services", json=one, headers=alice).status_code == 201
    for path in ("/api/v1/services/echo/metrics", "/api/v1/services/echo/latency"):
        theirs = w.client.get(path, headers=bob)
        assert theirs.status_code == 404 and theirs.json()["error"] == "not_found", theirs.text
        assert w.client.get(path, headers=alice).status_code == 200, path
        assert w.client.get(path, headers=w.admin).status_code == 200, path


class Crash(Exception):
    """The node dying between a replica task's submit and its record."""


def _die_after_submit(ctl: ServiceController, monkeypatch: pytest.MonkeyPatch) -> None:
    submit = ctl.tasks.submit

    def submit_then_die(*args: Any, **kw: Any) -> tuple[str, bool]:
        submit(*args, **kw)
        raise Crash

    monkeypatch.setattr(ctl.tasks, "submit", submit_then_die)


def _restarted(ctl: ServiceController) -> ServiceController:
    """A fresh controller on the same store, as a restarted node builds it."""
    return ServiceController(
        ctl.db, ctl.node_code, ctl.tasks, ctl.ledger, ctl.directory, ctl.clock, ctl.sched,
        ctl.plane, ctl.segment_s,
    )  # fmt: skip


def _replica_tasks(w: World) -> dict[str, str]:
    """Every replica task of ``echo`` in the store, tracked or not: id -> state."""
    with w.rt.db.read() as s:
        rows = s.query(t.Task).filter(t.Task.name.like("service/echo/%")).all()
        return {row.id: row.state for row in rows}


def test_a_replica_submitted_but_never_recorded_is_adopted_on_restart(
    world: tuple[World, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _clock = world
    w.gateway("north", cpu_cores=8)
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    _die_after_submit(w.rt.service_controller, monkeypatch)
    r = w.client.post("/api/v1/services", json=one, headers=w.admin)
    assert r.status_code == 500  # the crash, in the deploy's own pass
    (orphan,) = _replica_tasks(w)  # submitted, and listed by no service
    assert w.rt.services.replicas("echo") == []
    monkeypatch.undo()
    w.rt.service_controller = ctl = _restarted(w.rt.service_controller)
    assert ctl.reconcile_all() == 1  # adopted, and no second replica started
    assert [p.task_id for p in w.rt.services.replicas("echo")] == [orphan]
    ctl.reconcile_all()
    assert list(_replica_tasks(w)) == [orphan]
    status = w.client.get("/api/v1/services/echo", headers=w.admin).json()
    assert [x["task_id"] for x in status["replicas"]] == [orphan] and status["live"] == 1
    # Deleting the service now cancels it like any replica.
    assert w.client.delete("/api/v1/services/echo", headers=w.admin).status_code == 202
    assert _replica_tasks(w)[orphan] == "CANCELED"


def test_a_replica_whose_service_went_while_untracked_is_cancelled_on_restart(
    world: tuple[World, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _clock = world
    _die_after_submit(w.rt.service_controller, monkeypatch)
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    assert w.client.post("/api/v1/services", json=one, headers=w.admin).status_code == 500
    monkeypatch.undo()
    # The service is deleted before any pass could see the orphan: it goes at once.
    assert w.client.delete("/api/v1/services/echo", headers=w.admin).status_code == 202
    assert w.client.get("/api/v1/services/echo", headers=w.admin).status_code == 404
    ((orphan, state),) = _replica_tasks(w).items()
    assert state == "QUEUED"  # still wanting a pool, untracked
    ctl = _restarted(w.rt.service_controller)
    assert ctl.reconcile_all() == 1
    assert _replica_tasks(w) == {orphan: "CANCELED"}


def test_a_failed_record_is_adopted_by_the_next_pass_without_a_restart(
    world: tuple[World, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _clock = world
    ctl = w.rt.service_controller
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    real_write = ctl.db.write
    calls = {"n": 0}

    def write_failing_once_after_a_submit() -> Any:
        # The record of the replica is the first write after the task's submit.
        if calls["n"] == -1:
            calls["n"] = 0
            raise Crash
        return real_write()

    submit = ctl.tasks.submit

    def submit_then_arm(*args: Any, **kw: Any) -> tuple[str, bool]:
        out = submit(*args, **kw)
        calls["n"] = -1
        return out

    monkeypatch.setattr(ctl.tasks, "submit", submit_then_arm)
    monkeypatch.setattr(ctl.db, "write", write_failing_once_after_a_submit)
    assert w.client.post("/api/v1/services", json=one, headers=w.admin).status_code == 500
    (orphan,) = _replica_tasks(w)
    monkeypatch.undo()
    ctl.reconcile_all()
    assert [p.task_id for p in w.rt.services.replicas("echo")] == [orphan]
    assert list(_replica_tasks(w)) == [orphan]


def test_a_service_whose_replicas_are_starting_is_unavailable_not_unknown(
    world: tuple[World, Clock],
) -> None:
    w, _clock = world
    one = {**SERVICE, "replicas": {"min": 1, "max": 1}}
    key = w.client.post("/api/v1/services", json=one, headers=w.admin).json()["key"]
    # No gateway: the replica task waits, so the router has no live replica to send to.
    r = w.client.get("/services/v1/echo/", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 503 and r.json()["error"] == "no-replica", r.text
    unknown = w.client.get("/services/v1/nosuch/", headers={"Authorization": f"Bearer {key}"})
    assert unknown.status_code == 404, unknown.text
