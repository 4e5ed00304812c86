"""Typed federation messages: a malformed body of each kind gets a 4xx naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from computenet.federation.envelope import seal
from computenet.federation.messages import MESSAGES
from nodeapi import World, running_world

MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "sync.push": ({"seq": "many"}, "seq"),
    "index.pull": ({"after": -1}, "after"),
    "resolve": ({"cpi": ["not", "a", "string"]}, "cpi"),
    "task.forward": (
        {"tasks": [{"spec": {"executors": [{"command": ["true"]}]}}]},
        "tasks.0.task_id",
    ),
    "task.confirm": ({"task_ids": "cn-1"}, "task_ids"),
    "task.status": ({"task_ids": [7]}, "task_ids.0"),
    "task.cancel": ({}, "task_ids"),
    "task.update": ({"tasks": "all"}, "tasks"),
    "settlement.statement": ({"period": {"from": 1}}, "period"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path: Path = tmp_path_factory.mktemp("fed-msg")
    with running_world(path, "cn") as w:
        yield w


def test_every_kind_has_a_malformed_case() -> None:
    assert set(MALFORMED) == set(MESSAGES)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_message_is_a_4xx_naming_the_field(world: World, kind: str) -> None:
    body, field = MALFORMED[kind]
    env = seal(world.rt.federation.ident, kind, body, to=world.rt.federation.ident.code)
    r = world.client.post(f"/federation/v1/msg/{kind}", json=env.model_dump(mode="json"))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_input"
    assert f"malformed {kind} message: {field}" in r.json()["message"]


def test_a_task_forward_with_a_bad_spec_names_the_spec_field(world: World) -> None:
    body = {"tasks": [{"task_id": "cn-01", "spec": {"executors": []}}]}
    env = seal(world.rt.federation.ident, "task.forward", body, to=world.rt.federation.ident.code)
    r = world.client.post("/federation/v1/msg/task.forward", json=env.model_dump(mode="json"))
    assert r.status_code == 400 and "tasks.0.spec.executors" in r.json()["message"]
