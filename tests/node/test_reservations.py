"""Advance reservations through the node's real API and its running scheduler (issue 6).

A pool of 2 A100 cards; tenant acme reserves both for a window a few seconds ahead. Before
the window, work that ends before it may use the cards and work that would run into it
waits; inside it, acme's task starts on the cards while globex's waits; after it, the cards
are free again. Every amount is recomputed here with exact Decimal arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from computenet.store.tables_billing import Charge
from nodeapi import World, running_world
from polling import wait_for

NODE = "cn.31"
A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 2}
ON_DEMAND = Decimal("10.5")
RESERVED = Decimal("6.25")
NINE = Decimal("0.000000001")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, NODE) as w:
        yield w


def _card_hours(cards: int, start: datetime, end: datetime) -> Decimal:
    seconds = Decimal(str((end - start).total_seconds()))
    return (seconds * cards / 3600).quantize(NINE, rounding=ROUND_HALF_EVEN)


def _gpu_task(limit_s: int | None, cards: int = 2) -> dict[str, Any]:
    res: dict[str, Any] = {"accelerator": {"count": cards}, "cpu_cores": 1, "ram_gb": 1}
    if limit_s is not None:
        res["time_limit_s"] = limit_s
    return {"executors": [{"command": ["true"]}], "resources": res}


def _usage(cards: int = 2) -> dict[str, Any]:
    return {"wall_s": "1.5", "cpu_cores": 1, "memory_mib": 954, "cards": cards}


def _task(world: World, tid: str) -> dict[str, Any]:
    out: dict[str, Any] = world.client.get(f"/api/v1/tasks/{tid}", headers=world.admin).json()
    return out


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def _charges(world: World, key: str) -> list[Charge]:
    with world.rt.db.read() as s:
        return list(s.scalars(select(Charge).where(Charge.task_id == key)))


def _setup(world: World) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    alice = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    bob = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    gw = world.gateway("gpu", accelerator=A100, price_per_card_hour=str(ON_DEMAND))
    price = {"scope": "*", "tier": "reserved", "unit": "card_hour", "price": str(RESERVED)}
    assert world.client.post("/api/v1/prices", json=price, headers=world.admin).status_code == 201
    return alice, bob, gw


def _reserve(world: World, who: dict[str, str], **body: Any) -> Any:
    return world.client.post("/api/v1/reservations", json=body, headers=who)


def test_reserved_cards_go_to_their_tenant_inside_the_window_and_are_free_outside(
    world: World,
) -> None:
    alice, bob, gw = _setup(world)
    start = datetime.now(UTC) + timedelta(seconds=5)
    end = start + timedelta(seconds=8)
    r = _reserve(
        world,
        alice,
        model="A100",
        cards=2,
        starts_at=start.isoformat(),
        ends_at=end.isoformat(),
    )
    assert r.status_code == 201, r.text
    rsv = r.json()
    assert rsv["pool"] == "cn.31/gpu/cpu" and rsv["state"] == "booked"
    assert Decimal(rsv["unit_price"]) == RESERVED
    assert Decimal(rsv["cost"]) == _card_hours(2, start, end) * RESERVED

    # Before the window: work that ends before it runs on the cards...
    short = world.submit(bob, _gpu_task(limit_s=1))
    lease = world.lease(gw)
    assert lease["task_id"] == short
    world.report(gw, lease, "RUNNING")
    world.report(gw, lease, "COMPLETE", usage=_usage())
    # ... and work that would run into it waits, and says why.
    long = world.submit(bob, _gpu_task(limit_s=60))
    unlimited = world.submit(bob, _gpu_task(limit_s=None))
    for tid in (long, unlimited):
        wait_for(lambda tid=tid: "reserved" in _task(world, tid).get("reason", ""), 15, "a reason")
    assert "without a time limit" in _task(world, unlimited)["reason"]
    assert datetime.now(UTC) < start, "the test machine was too slow to get here in 5 s"

    # Inside the window: acme's task starts on the reserved cards; globex's still wait.
    _sleep_until(start + timedelta(milliseconds=200))
    mine = world.submit(alice, _gpu_task(limit_s=3))
    lease = world.lease(gw)
    assert lease["task_id"] == mine
    world.report(gw, lease, "RUNNING")
    assert _task(world, long)["state"] == "QUEUED" and _task(world, long).get("pool") is None
    world.report(gw, lease, "COMPLETE", usage=_usage())
    assert _task(world, mine)["reservation"] == rsv["id"]
    assert datetime.now(UTC) < end, "the test machine was too slow to get here in the window"
    assert _task(world, long).get("pool") is None

    # After the window: the cards are free; globex's waiting task gets them.
    _sleep_until(end)
    lease = world.lease(gw)
    assert lease["task_id"] in (long, unlimited)
    assert datetime.now(UTC) >= end

    # Billing: the window at the reserved price, exactly; the reserving tenant's task pays
    # nothing more for the cards; globex's short task pays on demand.
    wait_for(lambda: _charges(world, rsv["id"]), 15, "the window's charge")
    [window] = _charges(world, rsv["id"])
    assert (window.tenant, window.tier, window.unit) == ("acme", "reserved", "card_hour")
    assert window.quantity == _card_hours(2, start, end)
    assert window.amount == window.quantity * RESERVED == Decimal(rsv["cost"])
    [covered] = _charges(world, mine)
    assert (covered.tier, covered.unit_price, covered.amount) == ("reserved", 0, 0)
    [paid] = _charges(world, short)
    assert paid.tier == "on_demand" and paid.unit_price == ON_DEMAND
    assert paid.amount == paid.quantity * ON_DEMAND > 0
    got = world.client.get(f"/api/v1/reservations/{rsv['id']}", headers=alice).json()
    assert got["state"] == "charged"


def test_the_window_cost_is_held_against_the_budget(world: World) -> None:
    alice, _bob, _gw = _setup(world)
    r = world.client.put("/api/v1/budgets/acme", json={"monthly_limit": "100"}, headers=world.admin)
    assert r.status_code == 200, r.text
    start = datetime.now(UTC) + timedelta(hours=1)
    # 2 cards x 10 h x 6.25 = 125 > 100: refused with the numbers.
    r = _reserve(world, alice, model="A100", cards=2, starts_at=start.isoformat(), duration_s=36000)
    assert r.status_code == 402, r.text
    assert "costs 125.000000000" in r.json()["message"] and "100" in r.json()["message"]
    r = _reserve(world, alice, model="A100", cards=2, starts_at=start.isoformat(), duration_s=7200)
    assert r.status_code == 201, r.text
    budget = world.client.get("/api/v1/budgets/acme", headers=alice).json()
    assert Decimal(budget["held"]) == Decimal(25) and Decimal(budget["left"]) == Decimal(75)
    # Called off before the window: nothing is charged and the hold is released.
    rid = r.json()["id"]
    r = world.client.delete(f"/api/v1/reservations/{rid}", headers=alice)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    budget = world.client.get("/api/v1/budgets/acme", headers=alice).json()
    assert Decimal(budget["held"]) == 0 and not _charges(world, rid)


def test_cancelled_inside_the_window_it_is_charged_for_what_it_held(world: World) -> None:
    alice, _bob, _gw = _setup(world)
    start = datetime.now(UTC)
    r = _reserve(world, alice, model="A100", cards=1, starts_at=start.isoformat(), duration_s=3600)
    assert r.status_code == 201, r.text
    rsv = r.json()
    time.sleep(0.3)
    r = world.client.delete(f"/api/v1/reservations/{rsv['id']}", headers=alice)
    assert r.status_code == 200 and r.json()["state"] == "charged"
    began = datetime.fromisoformat(rsv["starts_at"])
    ended = datetime.fromisoformat(r.json()["ends_at"])
    [charge] = _charges(world, rsv["id"])
    assert charge.quantity == _card_hours(1, began, ended) > 0
    assert charge.amount == charge.quantity * RESERVED
    again = world.client.delete(f"/api/v1/reservations/{rsv['id']}", headers=alice)
    assert again.status_code == 409


def test_cards_cannot_be_reserved_twice_over(world: World) -> None:
    alice, bob, _gw = _setup(world)
    start = datetime.now(UTC) + timedelta(hours=2)
    body = {"model": "A100", "cards": 2, "duration_s": 3600}
    first = _reserve(world, alice, starts_at=start.isoformat(), **body)
    assert first.status_code == 201, first.text
    overlapping = _reserve(
        world, bob, starts_at=(start + timedelta(minutes=30)).isoformat(), **body
    )
    assert overlapping.status_code == 409
    assert "free of other reservations" in overlapping.json()["message"]
    after = _reserve(world, bob, starts_at=(start + timedelta(hours=1)).isoformat(), **body)
    assert after.status_code == 201, after.text


def test_reservations_are_private_to_their_tenant(world: World) -> None:
    alice, bob, _gw = _setup(world)
    start = datetime.now(UTC) + timedelta(hours=1)
    rid = _reserve(
        world, alice, model="A100", cards=1, starts_at=start.isoformat(), duration_s=60
    ).json()["id"]
    assert world.client.get(f"/api/v1/reservations/{rid}", headers=bob).status_code == 404
    assert world.client.delete(f"/api/v1/reservations/{rid}", headers=bob).status_code == 404
    assert world.client.get("/api/v1/reservations", headers=bob).json() == []
    assert [r["id"] for r in world.client.get("/api/v1/reservations", headers=alice).json()] == [
        rid
    ]
    everyone = world.client.get("/api/v1/reservations", headers=world.admin).json()
    assert [r["id"] for r in everyone] == [rid]
    # A provider operator sees the reservations on its own pools, and only those.
    owner = world.mint(role="provider", subject="cn.31/gpu")["auth"]
    world.gateway("gpu2")  # a provider whose prefix starts like the owner's
    other = world.mint(role="provider", subject="cn.31/gpu2")["auth"]
    assert [r["id"] for r in world.client.get("/api/v1/reservations", headers=owner).json()] == [
        rid
    ]
    assert world.client.get("/api/v1/reservations", headers=other).json() == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "A100", "cards": 3, "duration_s": 60}, 409, "free of other reservations"),
        ({"model": "H100", "cards": 1, "duration_s": 60}, 404, "no pool here has H100"),
        ({"model": "A100", "cards": 1, "duration_s": 60, "region": "44"}, 404, "region 44"),
        ({"model": "A100", "cards": 0, "duration_s": 60}, 400, "cards"),
        ({"model": "A100", "cards": 1}, 400, "exactly one of ends_at and duration_s"),
        ({"model": "A100", "cards": 1, "duration_s": 60, "start": "past"}, 400, "in the past"),
        ({"model": "A100", "cards": 1, "duration_s": 60, "start": "naive"}, 400, "time zone"),
        ({"model": "A100", "cards": 1, "duration_s": 99 * 86400}, 400, "duration_s"),
    ],
)
def test_bad_reservations_are_refused_with_a_reason(
    world: World, body: dict[str, Any], status: int, words: str
) -> None:
    alice, _bob, _gw = _setup(world)
    start = datetime.now(UTC) + timedelta(hours=1)
    when = body.pop("start", "")
    if when == "past":
        start -= timedelta(days=1, hours=1)
    text = start.isoformat()
    if when == "naive":
        text = start.replace(tzinfo=None).isoformat()
    r = _reserve(world, alice, starts_at=text, **body)
    assert r.status_code == status, r.text
    assert words in r.text
