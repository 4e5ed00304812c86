"""Attack class 8 (issue 14): ownership keyed on a name alone. Through the node's real HTTP
API: the same user name under two tenants is two principals, and a user with no tenant whose
name equals a tenant's gets nothing of that tenant (secrets, budget, invoices)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeapi import TASK, World, running_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn.45") as w:
        yield w


def test_the_same_name_under_two_tenants_is_two_principals(world: World) -> None:
    c = world.client
    acme_bob = world.mint(role="user", subject="bob", tenant="acme")["auth"]
    globex_bob = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    key = {"Idempotency-Key": "nightly-1"}
    tid = c.post("/api/v1/tasks", json=TASK, headers={**acme_bob, **key}).json()["id"]
    # Globex's bob sees nothing of it, cannot cancel it, and his same key is his own task.
    for method, path in [
        ("GET", f"/api/v1/tasks/{tid}"),
        ("POST", f"/api/v1/tasks/{tid}/cancel"),
        ("GET", f"/ga4gh/tes/v1/tasks/{tid}"),
        ("POST", f"/ga4gh/tes/v1/tasks/{tid}:cancel"),
        ("GET", f"/api/v1/tasks/{tid}/explain"),
    ]:
        r = c.request(method, path, headers=globex_bob)
        assert r.status_code == 404, (path, r.text)
    assert c.get("/api/v1/tasks", headers=globex_bob).json()["tasks"] == []
    r = c.post("/api/v1/tasks", json={**TASK, "name": "other"}, headers={**globex_bob, **key})
    assert r.status_code == 201 and r.json()["id"] != tid, r.text
    assert c.get(f"/api/v1/tasks/{tid}", headers=acme_bob).json()["state"] == "QUEUED"
    # Datasets: registered by acme's bob, globex's bob may not change them.
    body = {"name": "genome", "size_bytes": 10, "regions": ["51"]}
    r = c.post("/api/v1/datasets", json=body, headers=acme_bob)
    assert r.status_code == 201 and r.json()["owner"] == "acme/bob"
    r = c.post("/api/v1/datasets", json={**body, "regions": ["44"]}, headers=globex_bob)
    assert r.status_code == 409 and "acme/bob" in r.json()["message"]
    assert c.get("/api/v1/datasets/genome", headers=acme_bob).json()["regions"] == ["51"]


def test_a_user_named_like_a_tenant_gets_nothing_of_that_tenant(world: World) -> None:
    c = world.client
    member = world.mint(role="user", subject="carol", tenant="acme")["auth"]
    impostor = world.mint(role="user", subject="acme")["auth"]  # no tenant, the tenant's name
    r = c.put("/api/v1/secrets/db-pass", json={"value": "ACME-SECRET-VALUE"}, headers=member)
    assert r.status_code == 200, r.text
    r = c.put("/api/v1/budgets/acme", json={"monthly_limit": "100"}, headers=world.admin)
    assert r.status_code == 200, r.text
    # Secrets: not listed, not usable by a task.
    assert c.get("/api/v1/secrets", headers=impostor).json() == []
    steal = {**TASK, "secrets": {"PW": "db-pass"}, "resources": {"time_limit_s": 60}}
    r = c.post("/api/v1/tasks", json=steal, headers=impostor)
    assert r.status_code == 400 and "no secret named 'db-pass'" in r.json()["message"]
    # Budget and invoices: as if they did not exist.
    assert c.get("/api/v1/budgets/acme", headers=impostor).status_code == 404
    assert c.get("/api/v1/invoices/acme/2026-11", headers=impostor).status_code == 404
    assert c.get("/api/v1/budgets/acme", headers=member).status_code == 200
    # Its own secret of the same name is its own: a task gets that value, never acme's.
    r = c.put("/api/v1/secrets/db-pass", json={"value": "impostor-own"}, headers=impostor)
    assert r.status_code == 200
    gw = world.gateway("acme-host")
    world.submit(impostor, steal)
    lease = world.lease(gw)
    assert lease["secrets"] == {"PW": "impostor-own"}
    # The member's task still gets the tenant's value.
    world.submit(member, steal)
    assert world.lease(gw)["secrets"] == {"PW": "ACME-SECRET-VALUE"}


@pytest.mark.parametrize("tenant", ["acme/bob", "user:x", "federation:cn.31"])
def test_tenant_names_that_could_read_as_another_principal_are_refused(
    world: World, tenant: str
) -> None:
    r = world.client.post(
        "/api/v1/tokens",
        json={"role": "user", "subject": "x", "tenant": tenant},
        headers=world.admin,
    )
    assert r.status_code in (400, 422) and "tenant" in r.text, r.text


def test_a_token_minted_with_such_a_tenant_before_stands_for_no_one(world: World) -> None:
    from computenet.node.auth import mint_token

    secret, _row = mint_token(world.rt.db, "user", "bob", tenant="acme/x")
    r = world.client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401 and "tenant name is no longer valid" in r.json()["message"]
