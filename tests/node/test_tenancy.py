"""Tenants, roles and scopes: who may see and do what (issue 9, must-show 1).

Consumers of two organisations, a provider operator, a node operator and the platform
admin, all through the real HTTP API of a node (FastAPI's TestClient, lifespan running).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeapi import TASK, World, running_world

NODE = "cn.44"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, NODE) as w:
        yield w


def test_a_tenant_cannot_touch_another_tenants_tasks(world: World) -> None:
    a = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    b = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    tid = world.submit(b)
    c = world.client
    for method, path in [
        ("GET", f"/api/v1/tasks/{tid}"),
        ("POST", f"/api/v1/tasks/{tid}/cancel"),
        ("GET", f"/ga4gh/tes/v1/tasks/{tid}"),
        ("POST", f"/ga4gh/tes/v1/tasks/{tid}:cancel"),
    ]:
        r = c.request(method, path, headers=a)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
    assert c.get("/api/v1/tasks", headers=a).json()["tasks"] == []
    assert c.get("/ga4gh/tes/v1/tasks", headers=a).json().get("tasks", []) == []
    # The owner still sees (and could cancel) it; the 404 above changed nothing.
    assert c.get(f"/api/v1/tasks/{tid}", headers=b).json()["state"] == "QUEUED"
    assert [t["id"] for t in c.get("/api/v1/tasks", headers=b).json()["tasks"]] == [tid]


def test_revoked_and_expired_tokens_get_401(world: World) -> None:
    carol = world.mint(role="user", subject="carol", tenant="acme")
    assert world.client.get("/api/v1/tasks", headers=carol["auth"]).status_code == 200
    r = world.client.post(f"/api/v1/tokens/{carol['id']}/revoke", headers=world.admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = world.client.get("/api/v1/tasks", headers=carol["auth"])
    assert r.status_code == 401 and r.json()["message"] == "token revoked"

    brief = world.mint(role="user", subject="dan", ttl_s=0.5)
    assert world.client.get("/api/v1/tasks", headers=brief["auth"]).status_code == 200
    time.sleep(0.6)
    r = world.client.get("/api/v1/tasks", headers=brief["auth"])
    assert r.status_code == 401 and r.json()["message"] == "token expired"


def test_a_user_may_revoke_its_own_token_but_no_one_elses(world: World) -> None:
    eve = world.mint(role="user", subject="eve")
    fay = world.mint(role="user", subject="fay")
    r = world.client.post(f"/api/v1/tokens/{fay['id']}/revoke", headers=eve["auth"])
    assert r.status_code == 404
    assert world.client.get("/api/v1/tasks", headers=fay["auth"]).status_code == 200
    r = world.client.post(f"/api/v1/tokens/{eve['id']}/revoke", headers=eve["auth"])
    assert r.status_code == 200
    assert world.client.get("/api/v1/tasks", headers=eve["auth"]).status_code == 401


def test_scopes_limit_a_token_to_reading(world: World) -> None:
    reader = world.mint(role="user", subject="gil", scopes=["read"])
    assert reader["scopes"] == ["read"]
    assert world.client.get("/api/v1/tasks", headers=reader["auth"]).status_code == 200
    r = world.client.post("/api/v1/tasks", json=TASK, headers=reader["auth"])
    assert r.status_code == 403 and "'write' scope" in r.json()["message"]
    r = world.client.post(
        "/api/v1/tokens",
        json={"role": "user", "subject": "x", "scopes": ["admin"]},
        headers=world.admin,
    )
    assert r.status_code == 400 and "cannot hold scope" in r.json()["message"]


def test_a_provider_operator_sees_only_the_work_on_its_pools(world: World) -> None:
    consumer = world.mint(role="user", subject="hal", tenant="acme")["auth"]
    gw_acme = world.gateway("acme")
    on_acme = world.submit(consumer)
    assert world.lease(gw_acme)["task_id"] == on_acme
    world.gateway("globex")  # globex's pool takes the next task or none: either way not acme's
    queued = world.submit(consumer)

    ops = world.mint(role="provider", subject=f"{NODE}/acme")["auth"]
    listed = [t["id"] for t in world.client.get("/api/v1/tasks", headers=ops).json()["tasks"]]
    assert on_acme in listed and queued not in listed
    assert world.client.get(f"/api/v1/tasks/{on_acme}", headers=ops).status_code == 200
    assert world.client.get(f"/api/v1/tasks/{queued}", headers=ops).status_code == 404
    for method, path, body in [
        ("POST", "/api/v1/tasks", TASK),
        ("POST", f"/api/v1/tasks/{on_acme}/cancel", None),
        ("POST", "/api/v1/providers", {"label": "z"}),
        ("GET", "/api/v1/audit", None),
    ]:
        assert world.client.request(method, path, json=body, headers=ops).status_code == 403
    r = world.client.post(
        "/api/v1/tokens",
        json={"role": "provider", "subject": f"{NODE}/nobody"},
        headers=world.admin,
    )
    assert r.status_code == 400 and "no provider" in r.json()["message"]


def test_a_gateway_cannot_report_on_another_providers_task(world: World) -> None:
    consumer = world.mint(role="user", subject="ida")["auth"]
    gw_acme = world.gateway("acme")
    tid = world.submit(consumer)
    leased = world.lease(gw_acme)
    gw_other = world.gateway("globex")
    report = {"lease_id": leased["lease_id"], "state": "COMPLETE", "executors": []}
    r = world.client.post(f"/gateway/v1/tasks/{tid}/report", json=report, headers=gw_other)
    assert r.status_code == 409 and "no longer held" in r.json()["message"]
    task = world.client.get(f"/api/v1/tasks/{tid}", headers=world.admin).json()
    assert task["state"] in ("INITIALIZING", "QUEUED", "RUNNING")  # untouched by globex


def test_operators_mint_consumers_but_not_admins(world: World) -> None:
    op = world.mint(role="operator", subject="ops-1")["auth"]
    assert world.mint(by=op, role="user", subject="jan")["role"] == "user"
    r = world.client.post("/api/v1/tokens", json={"role": "admin", "subject": "evil"}, headers=op)
    assert r.status_code == 403 and "platform admin" in r.json()["message"]
    listed = world.client.get("/api/v1/tokens", headers=op).json()
    assert {t["role"] for t in listed} >= {"admin", "operator", "user"}
    assert all("token" not in t for t in listed)  # secrets are shown once, at minting
    consumer = world.mint(role="user", subject="kim")["auth"]
    assert world.client.get("/api/v1/tokens", headers=consumer).status_code == 403
