"""GA4GH TES 1.1 details a standard client counts on, each answer checked against the spec's
schemas: inline content wins over a url, a bare path is a file URL under the node's URL
policy, one log entry per attempt, a warning for unsupported backend_parameters, and HTTP
Basic authentication with the token as the password."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodeapi import World, running_world
from tesschema import validate

TES = "/ga4gh/tes/v1/tasks"
EXEC = [{"image": "alpine", "command": ["cat", "/data/in"]}]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # A node that lets tasks read one shared tree, as `--url-allow file:///srv/shared/` does.
    with running_world(tmp_path, "cn", url_allow=("file:///srv/shared/",)) as w:
        yield w


def _create(world: World, task: dict[str, Any], who: dict[str, str] | None = None) -> str:
    r = world.client.post(TES, json=task, headers=who or world.admin)
    assert r.status_code == 200, r.text
    validate("tesCreateTaskResponse", r.json())
    return str(r.json()["id"])


def _full(world: World, tid: str) -> dict[str, Any]:
    r = world.client.get(f"{TES}/{tid}", params={"view": "FULL"}, headers=world.admin)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    validate("tesTask", body)
    return body


def test_content_wins_over_url(world: World) -> None:
    both = {"path": "/data/in", "url": "s3://bucket/in", "content": "inline\n"}
    tid = _create(world, {"executors": EXEC, "inputs": [both]})
    [stored] = _full(world, tid)["inputs"]
    assert stored["content"] == "inline\n" and "url" not in stored


def test_bare_path_is_a_file_url_under_the_url_policy(world: World) -> None:
    allowed = {"path": "/data/in", "url": "/srv/shared/genome.fa"}
    tid = _create(world, {"executors": EXEC, "inputs": [allowed]})
    assert _full(world, tid)["inputs"][0]["url"] == "file:///srv/shared/genome.fa"
    refused = {"path": "/data/in", "url": "/etc/shadow"}
    r = world.client.post(TES, json={"executors": EXEC, "inputs": [refused]}, headers=world.admin)
    assert r.status_code == 400
    assert "outside the shared file trees" in r.json()["message"]


def test_unsupported_backend_parameters_leave_a_warning(world: World) -> None:
    res = {"backend_parameters": {"VmSize": "Standard_D64_v3", "policy": "cheapest"}}
    tid = _create(world, {"executors": EXEC, "resources": res})
    task = _full(world, tid)
    # Not stored or returned (TES), but said: the supported key stays.
    assert task["resources"]["backend_parameters"] == {"policy": "cheapest"}
    [log] = task["logs"]
    assert any("unsupported backend_parameters ignored: VmSize" in s for s in log["system_logs"])
    plain = _create(world, {"executors": EXEC})
    assert _full(world, plain)["logs"] == []


def test_a_retried_task_keeps_one_log_entry_per_attempt(world: World) -> None:
    gw = world.gateway("acme")
    tid = _create(world, {"executors": [{"image": "alpine", "command": ["echo", "hi"]}]})
    first = world.lease(gw)
    world.report(gw, first, "RUNNING")
    r = world.client.post(
        f"/gateway/v1/tasks/{tid}/release",
        json={"lease_id": first["lease_id"], "reason": "backend went down"},
        headers=gw,
    )
    assert r.status_code == 200, r.text
    second = world.lease(gw)
    ran = [{"index": 0, "exit_code": 0, "stdout": {"offset": 0, "data": "hi\n"}}]
    usage = {"wall_s": "0.1", "cpu_cores": 1, "memory_mib": 954, "cards": 0}
    world.report(gw, second, "RUNNING")
    world.report(gw, second, "COMPLETE", executors=ran, usage=usage)
    logs = _full(world, tid)["logs"]
    assert [entry["metadata"]["attempt"] for entry in logs] == ["1", "2"]
    assert logs[0]["logs"] == [] and logs[1]["logs"][0]["stdout"] == "hi\n"
    assert any("backend went down" in s for s in logs[0]["system_logs"])


def test_basic_authentication_takes_the_token_as_password(world: World) -> None:
    alice = world.mint(role="user", subject="alice")
    basic = base64.b64encode(f"alice:{alice['token']}".encode()).decode()
    who = {"Authorization": f"Basic {basic}"}
    tid = _create(world, {"executors": EXEC}, who)
    listed = world.client.get(TES, headers=who).json()
    validate("tesListTasksResponseMinimal", listed)
    assert [t["id"] for t in listed["tasks"]] == [tid]
    wrong = base64.b64encode(b"alice:cnu_wrong").decode()
    r = world.client.get(TES, headers={"Authorization": f"Basic {wrong}"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = world.client.get(TES, headers={"Authorization": "Basic !!!"})
    assert r.status_code == 401 and "Basic with the token" in r.json()["message"]


def test_an_unknown_accelerator_model_is_refused_with_the_known_ones(world: World) -> None:
    res = {"backend_parameters": {"accelerator_model": "nvidia-zz9000"}}
    r = world.client.post(TES, json={"executors": EXEC, "resources": res}, headers=world.admin)
    assert r.status_code == 400
    message = r.json()["message"]
    assert "unknown accelerator model 'nvidia-zz9000'" in message
    assert "nvidia-h100-sxm" in message and "computenet catalog" in message
    # A family the catalog knows is fine, as is a model only a pool here declares.
    res = {"backend_parameters": {"accelerator_model": "A100"}}
    _create(world, {"executors": EXEC, "resources": res})
    card = {"vendor": "acme", "model": "acme-npu-1", "memory_mib": 1024, "count": 1}
    world.gateway("acme", accelerator=card)
    res = {"backend_parameters": {"accelerator_model": "acme-npu-1"}}
    _create(world, {"executors": EXEC, "resources": res})
