"""Only the node's service controller makes replica tasks: users cannot set ``service``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings

BINDING = {"name": "evil", "replica": 0, "home_node": "cn", "access": "public"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn"))
    admin = rt.bootstrap().admin_token
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {admin}"}


def test_native_api_refuses_a_user_set_binding(api: tuple[TestClient, dict[str, str]]) -> None:
    client, admin = api
    task = {"executors": [{"command": ["true"]}], "service": BINDING}
    r = client.post("/api/v1/tasks", json=task, headers=admin)
    assert r.status_code == 400, r.text
    assert "service controller" in r.json()["message"]


def test_tes_refuses_a_user_set_binding(api: tuple[TestClient, dict[str, str]]) -> None:
    client, admin = api
    task = {"executors": [{"image": "x", "command": ["true"]}], "service": BINDING}
    r = client.post("/ga4gh/tes/v1/tasks", json=task, headers=admin)
    assert r.status_code == 400, r.text
    assert "service" in r.text
