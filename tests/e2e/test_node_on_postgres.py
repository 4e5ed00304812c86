"""A whole node on a real PostgreSQL: `computenet node --db-url`, a gateway, a task."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from nodeproc import admin_token, free_port, start_gateway, start_node
from pg import fresh_database, require_postgres

pytestmark = pytest.mark.slow


def test_task_runs_on_a_postgres_backed_node(tmp_path: Path) -> None:
    url_db = fresh_database(require_postgres())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port, "--db-url", url_db)
    gateway = None
    try:
        token = admin_token(node)
        gateway = start_gateway(url, token, tmp_path / "gw", "pg", cpus=2)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            tid = http.post(
                "/api/v1/tasks", json={"executors": [{"command": ["echo", "from postgres"]}]}
            ).json()["id"]
            for _ in range(300):
                task = http.get(f"/api/v1/tasks/{tid}").json()
                if task["state"] == "COMPLETE":
                    break
                time.sleep(0.1)
            assert task["state"] == "COMPLETE", task
            assert task["attempts"][0]["executors"][0]["stdout"] == "from postgres\n"
            assert task["usage"][0]["pool"] == "cn/pg/host"
        assert not (tmp_path / "node" / "computenet.db").exists()  # nothing went to SQLite
    finally:
        if gateway is not None:
            gateway.stop()
        node.stop()
