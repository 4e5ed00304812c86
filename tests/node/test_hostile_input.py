"""Hostile input at the API boundary (issue 9): each refused with a clear 4xx JSON error.

Shell metacharacters that reach a generated Slurm script are covered where the script is
built (tests/gateway/test_slurm_backend.py, ``NASTY``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings

ECHO = {"command": ["echo", "hi"]}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn", max_body_bytes=64 * 1024))
    admin = rt.bootstrap().admin_token
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {admin}"}


def _refused(r: Any, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "message", "status"} and words in body["message"], body


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ({"inputs": [{"path": "/in", "url": "http://169.254.169.254/latest"}]}, "internal address"),
        ({"inputs": [{"path": "/in", "url": "file:///etc/shadow"}]}, "outside the shared file"),
        ({"outputs": [{"path": "/out", "url": "file:///etc/cron.d/x"}]}, "outside the shared file"),
        ({"inputs": [{"path": "/../../etc/passwd", "content": "x"}]}, "must not contain '..'"),
        ({"executors": [{**ECHO, "workdir": "/w/../../root"}]}, "must not contain '..'"),
        ({"executors": [{**ECHO, "stdout": "/x\x00y"}]}, "NUL"),
    ],
)
def test_hostile_task_fields_are_refused(
    api: tuple[TestClient, dict[str, str]], task: dict[str, Any], words: str
) -> None:
    client, admin = api
    r = client.post("/api/v1/tasks", json={"executors": [ECHO], **task}, headers=admin)
    _refused(r, 400, words)


def test_oversized_deep_and_greedy_requests_are_refused(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, admin = api
    big = {"executors": [ECHO], "description": "x" * 100_000}
    _refused(client.post("/api/v1/tasks", json=big, headers=admin), 413, "over 65536 bytes")
    deep = '{"executors":[{"command":["x"]}],"tags":' + "[" * 5000 + "]" * 5000 + "}"
    headers = {**admin, "Content-Type": "application/json"}
    _refused(client.post("/api/v1/tasks", content=deep, headers=headers), 400, "")
    _refused(
        client.get("/api/v1/tasks", params={"page_size": 10**9}, headers=admin), 400, "page_size"
    )
    _refused(client.get("/ga4gh/tes/v1/tasks", params={"page_size": -1}, headers=admin), 400, "")
