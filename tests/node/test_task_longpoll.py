"""GET /api/v1/tasks/{id}?wait_s=: a long-poll that answers when the task moves, on a real
in-process node (lifespan running, so the node's wake-up signal is live)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from computenet.sdk.client import Waiter
from nodeapi import World, running_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn.44") as w:
        yield w


def test_a_long_poll_answers_when_the_task_moves(world: World) -> None:
    tid = world.submit(world.admin)  # no gateway: it stays QUEUED
    state = world.client.get(f"/api/v1/tasks/{tid}", headers=world.admin).json()["state"]
    assert state == "QUEUED"
    # Cancel it from another thread while the long-poll waits on QUEUED.
    timer = threading.Timer(
        0.3, lambda: world.client.post(f"/api/v1/tasks/{tid}/cancel", headers=world.admin)
    )
    timer.start()
    t0 = time.monotonic()
    r = world.client.get(f"/api/v1/tasks/{tid}?wait_s=20&state=QUEUED", headers=world.admin)
    took = time.monotonic() - t0
    timer.join()
    assert r.status_code == 200 and r.json()["state"] == "CANCELED", r.text
    assert took < 10, took  # answered by the change, not by the 20 s bound


def test_a_long_poll_answers_at_once_when_the_state_already_differs(world: World) -> None:
    tid = world.submit(world.admin)
    t0 = time.monotonic()
    r = world.client.get(f"/api/v1/tasks/{tid}?wait_s=20&state=RUNNING", headers=world.admin)
    assert r.json()["state"] == "QUEUED" and time.monotonic() - t0 < 10
    # Without ``state`` it waits for a final state: a queued task is answered at the bound.
    r = world.client.get(f"/api/v1/tasks/{tid}?wait_s=0.2", headers=world.admin)
    assert r.status_code == 200 and r.json()["state"] == "QUEUED"


def test_a_long_poll_is_bounded_and_scoped(world: World) -> None:
    tid = world.submit(world.admin)
    too_long = world.client.get(f"/api/v1/tasks/{tid}?wait_s=61", headers=world.admin)
    assert too_long.status_code in (400, 422) and "wait_s" in too_long.text
    other = world.mint(role="user", subject="eve", tenant="globex")["auth"]
    hidden = world.client.get(f"/api/v1/tasks/{tid}?wait_s=5", headers=other)
    assert hidden.status_code == 404


def test_the_sdk_waiter_never_asks_more_often_than_its_period() -> None:
    w = Waiter("t", timeout_s=None, on_change=None, progress=False)
    began = time.monotonic()
    assert 0.4 < w.pause(0.5, began) <= 0.5  # an early answer: wait out the rest
    assert w.pause(0.5, began - 1.0) == 0.0  # a long-poll that used its period: ask again now
    assert w.wait_s(0.5) == 0.5 and w.state is None
