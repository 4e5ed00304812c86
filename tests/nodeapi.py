"""An in-process node behind FastAPI's TestClient, with helpers to act as its callers:
mint tokens, submit, run a gateway's side of the protocol (helper module, not a test file)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings

TASK = {"name": "t", "executors": [{"command": ["echo", "hi"]}]}


@dataclass
class World:
    """A node and the callers a test plays: the admin, minted users, gateways."""

    client: TestClient
    rt: NodeRuntime
    admin: dict[str, str]

    def mint(self, by: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        """Mint a token (as the admin unless ``by``); ``auth`` holds its header."""
        r = self.client.post("/api/v1/tokens", json=body, headers=by or self.admin)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        out["auth"] = auth(out["token"])
        return out

    def submit(self, who: dict[str, str], task: dict[str, Any] | None = None) -> str:
        """Submit ``task`` (default: echo) as ``who``; return its id."""
        r = self.client.post("/api/v1/tasks", json=task or TASK, headers=who)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def gateway(self, label: str, **pool: Any) -> dict[str, str]:
        """Enrol provider ``label`` and its gateway, which declares one pool ``cpu``."""
        r = self.client.post("/api/v1/providers", json={"label": label}, headers=self.admin)
        enrol = {"token": r.json()["enrolment_token"], "name": f"{label}-gw"}
        gw = auth(self.client.post("/gateway/v1/enrol", json=enrol).json()["credential"])
        pools = {"pools": [{"label": "cpu", "cpu_cores": 2, "memory_mib": 4096, **pool}]}
        r = self.client.put("/gateway/v1/pools", json=pools, headers=gw)
        assert r.status_code == 200, r.text
        return gw

    def lease(self, gw: dict[str, str]) -> dict[str, Any]:
        """Long-poll until the gateway leases a task; return the lease."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            tasks = self.client.post("/gateway/v1/lease", json={"wait_s": 1}, headers=gw)
            if tasks.json()["tasks"]:
                leased: dict[str, Any] = tasks.json()["tasks"][0]
                return leased
        raise AssertionError("nothing leased")

    def report(
        self, gw: dict[str, str], lease: dict[str, Any], state: str, **extra: Any
    ) -> dict[str, Any]:
        """Report ``state`` (with ``usage=...`` etc.) on a leased task, as its gateway."""
        body = {"lease_id": lease["lease_id"], "state": state, "executors": [], **extra}
        r = self.client.post(f"/gateway/v1/tasks/{lease['task_id']}/report", json=body, headers=gw)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a bearer token."""
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def running_world(data_dir: Path, node_code: str, **settings: Any) -> Iterator[World]:
    """A bootstrapped node with its loops running; yields a World acting as its admin."""
    rt = NodeRuntime(
        NodeSettings(data_dir=data_dir, node_code=node_code, housekeeping_s=0.2, **settings)
    )
    admin = rt.bootstrap().admin_token
    assert admin is not None
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield World(client, rt, auth(admin))
