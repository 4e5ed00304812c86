"""Native API points a newcomer meets: explain names an unknown accelerator model, and the
audit log reads newest first, page by page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeapi import World, running_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn") as w:
        yield w


def test_explain_names_a_model_nobody_has_any_more(world: World) -> None:
    card = {"vendor": "acme", "model": "acme-npu-1", "memory_mib": 1024, "count": 1}
    gw = world.gateway("acme", accelerator=card)
    want = {"vendor": "acme", "model": "acme-npu-1"}
    task = {
        "executors": [{"command": ["true"]}],
        "resources": {"cpu_cores": 99, "accelerator": want},  # too big: it stays queued
    }
    # Accepted while a pool declares the model...
    tid = world.submit(world.admin, task)
    # ... then the provider retires its cards: explain names the model as unknown.
    plain = {"pools": [{"label": "cpu", "cpu_cores": 2, "memory_mib": 4096}]}
    assert world.client.put("/gateway/v1/pools", json=plain, headers=gw).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ex = world.client.get(f"/api/v1/tasks/{tid}/explain", headers=world.admin).json()
        if "unknown accelerator model 'acme-npu-1'" in (ex["reason"] or ""):
            break
        time.sleep(0.1)
    assert "unknown accelerator model 'acme-npu-1'" in ex["reason"], ex
    assert "no machine has 99 CPU cores" in ex["reason"]
    # A new task with that model is refused at once, naming the known ones.
    r = world.client.post("/api/v1/tasks", json=task, headers=world.admin)
    assert r.status_code == 400 and "unknown accelerator model 'acme-npu-1'" in r.text
    assert "known models: nvidia-t4" in r.json()["message"]


def test_audit_reads_newest_first_page_by_page(world: World) -> None:
    for i in range(5):
        world.mint(role="user", subject=f"u{i}")
    time.sleep(0.3)  # rows are written in batches every 0.2 s
    page = world.client.get(
        "/api/v1/audit", params={"order": "desc", "limit": 3}, headers=world.admin
    ).json()
    ids = [e["id"] for e in page["events"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    assert page["next_before_id"] == ids[-1] and "next_after_id" not in page
    older = world.client.get(
        "/api/v1/audit",
        params={"order": "desc", "limit": 3, "before_id": page["next_before_id"]},
        headers=world.admin,
    ).json()
    assert all(e["id"] < ids[-1] for e in older["events"]) and older["events"]
    oldest = world.client.get("/api/v1/audit", params={"limit": 2}, headers=world.admin).json()
    assert [e["id"] for e in oldest["events"]] == [1, 2] and oldest["next_after_id"] == 2


@pytest.mark.parametrize("param", ["after_id", "before_id"])
def test_audit_row_ids_beyond_64_bits_are_a_400_not_a_500(world: World, param: str) -> None:
    # Found by `make fuzz`: an id past a signed 64-bit integer overflowed the store's driver.
    r = world.client.get(
        "/api/v1/audit", params={param: 2**64, "order": "desc"}, headers=world.admin
    )
    assert r.status_code in (400, 422), r.text
