"""Charges, prices, budgets and statements through the node's real API (issue 6).

Every expected amount is computed here, independently, from the task's measured usage (its
usage record: the wall time the gateway reported, capped by the node at the time that really
passed) and the price in force, with exact Decimal arithmetic: a charge must equal it to the
digit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from computenet.store.tables_billing import Charge
from nodeapi import World, running_world

NODE = "cn.32"
PRICE = Decimal("0.371234")  # per core-hour
WALL = Decimal("1234.567891")
CORES = 2
NINE = Decimal("0.000000001")


def _task(**resources: Any) -> dict[str, Any]:
    return {
        "executors": [{"command": ["true"]}],
        "resources": {"cpu_cores": CORES, "ram_gb": 1, **resources},
    }


def _usage(wall_s: Decimal = WALL) -> dict[str, Any]:
    return {"wall_s": str(wall_s), "cpu_cores": CORES, "memory_mib": 954, "cards": 0}


def _expected(wall_s: Decimal, price: Decimal) -> Decimal:
    core_hours = (wall_s * CORES / 3600).quantize(NINE, rounding=ROUND_HALF_EVEN)
    return core_hours * price


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, NODE) as w:
        yield w


def _measured_wall(world: World, task_id: str) -> Decimal:
    """The wall time of the task's (last) usage record."""
    task = world.client.get(f"/api/v1/tasks/{task_id}", headers=world.admin).json()
    return Decimal(task["usage"][-1]["wall_s"])


def _charges(world: World, task_id: str) -> list[Charge]:
    from sqlalchemy import select

    with world.rt.db.read() as s:
        return list(
            s.scalars(select(Charge).where(Charge.task_id == task_id).order_by(Charge.attempt))
        )


@pytest.mark.parametrize("end", ["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"])
def test_a_finished_attempt_costs_its_price_times_its_usage(world: World, end: str) -> None:
    alice = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    tid = world.submit(alice, _task())
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    world.report(gw, lease, end, usage=_usage())
    [charge] = _charges(world, tid)
    wall = _measured_wall(world, tid)
    assert 0 < wall <= WALL
    assert charge.amount == _expected(wall, PRICE) == charge.quantity * charge.unit_price
    assert (charge.tenant, charge.owner, charge.unit, charge.tier) == (
        "acme",
        "acme/alice",
        "core_hour",
        "on_demand",
    )
    # The same final report again (a gateway retrying) changes nothing.
    world.report(gw, lease, end, usage=_usage())
    assert len(_charges(world, tid)) == 1


def test_a_cancelled_task_pays_for_what_ran(world: World) -> None:
    bob = world.mint(role="user", subject="bob")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    tid = world.submit(bob, _task())
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    assert world.client.post(f"/api/v1/tasks/{tid}/cancel", headers=bob).status_code == 200
    assert world.report(gw, lease, "RUNNING")["cancel"] is True
    ran = Decimal("12.5")
    world.report(gw, lease, "CANCELED", usage=_usage(ran))
    [charge] = _charges(world, tid)
    assert charge.amount == _expected(_measured_wall(world, tid), PRICE)
    assert charge.tenant == "user:bob"  # no tenant: the user pays for itself


def test_a_retried_task_pays_only_for_the_attempt_that_ran(world: World) -> None:
    carol = world.mint(role="user", subject="carol")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    tid = world.submit(carol, _task())
    first = world.lease(gw)
    r = world.client.post(
        f"/gateway/v1/tasks/{tid}/release",
        json={"lease_id": first["lease_id"], "reason": "backend down"},
        headers=gw,
    )
    assert r.status_code == 200, r.text
    second = world.lease(gw)
    assert second["attempt"] == 2
    world.report(gw, second, "COMPLETE", usage=_usage())
    [charge] = _charges(world, tid)
    assert charge.attempt == 2 and charge.amount == _expected(_measured_wall(world, tid), PRICE)


def test_prices_change_without_rewriting_history(world: World) -> None:
    dan = world.mint(role="user", subject="dan")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    # A book price for every acme pool, from an hour ago: it beats the pool's own offer.
    earlier = datetime.now(UTC) - timedelta(hours=1)
    book = {
        "scope": f"{NODE}/acme",
        "unit": "core_hour",
        "price": "0.5",
        "effective_from": earlier.isoformat(),
    }
    assert world.client.post("/api/v1/prices", json=book, headers=world.admin).status_code == 201
    tid = world.submit(dan, _task())
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    # Raised while the task runs: the task keeps the price in force when it started.
    later = {**book, "price": "9", "effective_from": None}
    assert world.client.post("/api/v1/prices", json=later, headers=world.admin).status_code == 201
    world.report(gw, lease, "COMPLETE", usage=_usage())
    [charge] = _charges(world, tid)
    wall = _measured_wall(world, tid)
    assert charge.unit_price == Decimal("0.5") and charge.amount == _expected(wall, Decimal("0.5"))
    listed = world.client.get("/api/v1/prices", headers=dan).json()
    assert [p["price"] for p in listed] == ["0.5", "9"]


def test_spot_work_is_priced_at_the_spot_price(world: World) -> None:
    eve = world.mint(role="user", subject="eve")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    spot = {"scope": "*", "tier": "spot", "unit": "core_hour", "price": "0.1"}
    world.client.post("/api/v1/prices", json=spot, headers=world.admin)
    tid = world.submit(eve, _task(preemptible=True))
    world.report(gw, world.lease(gw), "COMPLETE", usage=_usage())
    [charge] = _charges(world, tid)
    wall = _measured_wall(world, tid)
    assert charge.tier == "spot" and charge.amount == _expected(wall, Decimal("0.1"))


def test_budget_refuses_the_submission_that_would_break_it(world: World) -> None:
    fay = world.mint(role="user", subject="fay", tenant="globex")["auth"]
    gw = world.gateway("acme", price_per_core_hour="1.5")
    r = world.client.put(
        "/api/v1/budgets/globex",
        json={"monthly_limit": "10", "warn_fraction": "0.5"},
        headers=world.admin,
    )
    assert r.status_code == 200 and Decimal(r.json()["left"]) == 10
    no_limit = world.client.post("/api/v1/tasks", json=_task(), headers=fay)
    assert no_limit.status_code == 400 and "time_limit_s" in no_limit.json()["message"]

    hour = _task(time_limit_s=3600)  # at most 2 cores x 1 h x 1.5 = 3.0
    first = world.submit(fay, hour)
    second = world.submit(fay, hour)
    status = world.client.get("/api/v1/budgets/globex", headers=fay).json()
    held, left = Decimal(status["held"]), Decimal(status["left"])
    assert (held, left, status["warning"]) == (6, 4, True)
    third = world.submit(fay, hour)  # 9.0 held: still within 10
    refused = world.client.post("/api/v1/tasks", json=hour, headers=fay)
    body = refused.json()
    assert refused.status_code == 402 and body["error"] == "budget_exceeded"
    assert "spent 0" in body["message"] and "9.000000 is held" in body["message"]
    assert "may cost up to 3.000000" in body["message"], body["message"]
    # A repeat of an accepted submission is that task, not a refusal.
    key = {"Idempotency-Key": "k-1"}
    r = world.client.post("/api/v1/tasks", json=_task(time_limit_s=1), headers={**fay, **key})
    again = world.client.post("/api/v1/tasks", json=_task(time_limit_s=1), headers={**fay, **key})
    assert r.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == r.json()["id"]

    # The first task ends after 10 minutes: its hold is released and its charge counts.
    lease = world.lease(gw)
    assert lease["task_id"] == first
    world.report(gw, lease, "COMPLETE", usage=_usage(Decimal(600)))
    status = world.client.get("/api/v1/budgets/globex", headers=fay).json()
    spent = _expected(_measured_wall(world, first), Decimal("1.5"))
    assert Decimal(status["spent"]) == spent > 0
    assert Decimal(status["held"]) == Decimal("6.000834")  # 2nd, 3rd, 1-s task rounded up
    assert {second, third} <= {
        t["id"] for t in world.client.get("/api/v1/tasks", headers=fay).json()["tasks"]
    }


def test_invoices_and_earnings_add_up(world: World) -> None:
    gil = world.mint(role="user", subject="gil", tenant="initech")["auth"]
    gw = world.gateway("acme", price_per_core_hour=str(PRICE))
    walls = []
    for wall in [Decimal("100.1"), Decimal("200.2"), Decimal("300.3")]:
        tid = world.submit(gil, _task())
        world.report(gw, world.lease(gw), "COMPLETE", usage=_usage(wall))
        walls.append(_measured_wall(world, tid))
    period = datetime.now(UTC).strftime("%Y-%m")
    inv = world.client.get(f"/api/v1/invoices/initech/{period}", headers=gil).json()
    expected = sum((_expected(w, PRICE) for w in walls), Decimal(0))
    assert [(ln["attempts"], Decimal(ln["amount"])) for ln in inv["lines"]] == [(3, expected)]
    assert Decimal(inv["totals"]["CNY"]) == expected
    csv = world.client.get(f"/api/v1/invoices/initech/{period}?format=csv", headers=gil)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[-1].endswith(f",CNY,,,{expected}")

    provider = world.mint(role="provider", subject=f"{NODE}/acme")["auth"]
    earned = world.client.get(f"/api/v1/earnings/{NODE}/acme/{period}", headers=provider)
    assert Decimal(earned.json()["totals"]["CNY"]) == expected
    # Each party sees only its own statements.
    other = world.mint(role="user", subject="hal", tenant="umbrella")["auth"]
    assert world.client.get(f"/api/v1/invoices/initech/{period}", headers=other).status_code == 404
    assert (
        world.client.get(f"/api/v1/earnings/{NODE}/acme/{period}", headers=gil).status_code == 404
    )
    bad = world.client.get("/api/v1/invoices/initech/2026-13", headers=world.admin)
    assert bad.status_code == 400


def test_preempted_spot_work_pays_for_what_ran_and_runs_again(world: World) -> None:
    ivy = world.mint(role="user", subject="ivy")["auth"]
    card = {"vendor": "nvidia", "model": "nvidia-h100-sxm", "memory_mib": 81920, "count": 8}
    gw = world.gateway(
        "acme", cpu_cores=16, memory_mib=65536, accelerator=card, price_per_card_hour="30"
    )
    spot = {
        "executors": [{"command": ["true"]}],
        "resources": {"accelerator": {"count": 8}, "preemptible": True},
    }
    tid = world.submit(ivy, spot)
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    time.sleep(0.3)
    world.submit(
        ivy, {"executors": [{"command": ["true"]}], "resources": {"accelerator": {"count": 8}}}
    )
    deadline = time.monotonic() + 10
    while not _charges(world, tid):
        assert time.monotonic() < deadline, "the preempted attempt was never charged"
        time.sleep(0.05)
    [charge] = _charges(world, tid)
    task = world.client.get(f"/api/v1/tasks/{tid}", headers=ivy).json()
    assert task["state"] == "QUEUED" and "preempted" in task["reason"]
    [usage] = task["usage"]
    assert Decimal(usage["wall_s"]) >= Decimal("0.3")
    assert charge.tier == "spot" and charge.unit == "card_hour"
    assert charge.amount == Decimal(usage["card_hours"]) * Decimal(30)  # no spot price: on demand
    assert charge.attempt == 1
