"""Tenants' fair-share weights and quotas, set through the API, steer a live node's scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeapi import World, running_world
from polling import wait_for

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 4}
TASK = {"executors": [{"command": ["true"]}], "resources": {"accelerator": {"count": 1}}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn.11") as w:
        yield w


def _task(world: World, tid: str) -> dict[str, Any]:
    out: dict[str, Any] = world.client.get(f"/api/v1/tasks/{tid}", headers=world.admin).json()
    return out


def _share(world: World, tenant: str, **body: Any) -> Any:
    return world.client.put(f"/api/v1/shares/{tenant}", json=body, headers=world.admin)


def test_weights_split_the_cards_and_quotas_cap_them(world: World) -> None:
    acme = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    globex = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    assert _share(world, "acme", weight=3).status_code == 200
    assert _share(world, "globex", weight=1).status_code == 200
    # Both tenants queue 8 one-card tasks before any pool exists; then 4 cards appear.
    mine = [world.submit(acme, TASK) for _ in range(8)]
    theirs = [world.submit(globex, TASK) for _ in range(8)]
    world.gateway("gpu", accelerator=A100, cpu_cores=16, memory_mib=65536)

    def placed(ids: list[str]) -> int:
        return sum(1 for t in ids if _task(world, t).get("pool"))

    wait_for(lambda: placed(mine) + placed(theirs) == 4, 15, "the 4 cards to be handed out")
    assert (placed(mine), placed(theirs)) == (3, 1)  # weights 3 : 1

    shares = {
        s["tenant"]: s for s in world.client.get("/api/v1/shares", headers=world.admin).json()
    }
    assert (shares["acme"]["weight"], shares["acme"]["held_cards"]) == (3, 3)
    assert (shares["globex"]["weight"], shares["globex"]["held_cards"]) == (1, 1)
    own = world.client.get("/api/v1/shares", headers=globex).json()
    assert [s["tenant"] for s in own] == ["globex"]


def test_a_quota_caps_what_a_tenant_holds(world: World) -> None:
    globex = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    assert _share(world, "globex", weight=1, quota_cards=2).json()["quota_cards"] == 2
    world.gateway("gpu", accelerator=A100, cpu_cores=16, memory_mib=65536)
    ids = [world.submit(globex, TASK) for _ in range(4)]
    wait_for(lambda: sum(1 for t in ids if _task(world, t).get("pool")) == 2, 15, "2 placed")
    waiting = [t for t in ids if not _task(world, t).get("pool")]
    wait_for(
        lambda: "tenant globex is at its quota" in _task(world, waiting[0]).get("reason", ""),
        15,
        "the quota reason",
    )
    assert len(waiting) == 2


@pytest.mark.parametrize(
    ("body", "who", "status"),
    [
        ({"weight": 0}, "admin", 400),
        ({"weight": -1}, "admin", 400),
        ({"weight": 1, "quota_cards": -2}, "admin", 400),
        ({"weight": 1, "extra": 1}, "admin", 400),
        ({"weight": 2}, "user", 403),
    ],
)
def test_bad_share_settings_are_refused(
    world: World, body: dict[str, Any], who: str, status: int
) -> None:
    user = world.mint(role="user", subject="bob", tenant="globex")["auth"]
    headers = world.admin if who == "admin" else user
    r = world.client.put("/api/v1/shares/globex", json=body, headers=headers)
    assert r.status_code == status, r.text
