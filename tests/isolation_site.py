"""A real node and a separate root gateway that isolates its tasks (bubblewrap, a uid per
task, cgroups, podman for images), with consumer tokens of two tenants: the target of the
attack tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from backend_testing import unavailable
from nodeproc import CLI, Proc, admin_token, free_port, spawn, start_node

TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")
ROOT = Path(__file__).resolve().parents[1]


def require_isolation() -> str:
    """bwrap, podman and the local test image (installed in CI); returns the image name."""
    if os.geteuid() != 0:
        unavailable("isolating tasks needs a root gateway")
    done = subprocess.run(
        [str(ROOT / "scripts" / "isolation-up.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        unavailable(done.stderr.strip() or "scripts/isolation-up.sh failed")
    return done.stdout.split()[-1]


@dataclass
class Site:
    """The node, its gateway, and what the attacks aim at."""

    url: str
    node: Proc
    gateway: Proc
    node_dir: Path
    state_dir: Path
    sandbox_dir: Path
    dest: Path  # where outputs may be written (file:// URLs under it are allowed)
    victim_dir: Path  # root's own directory (0700) with a file no task may change
    image: str
    tokens: dict[str, str]  # tenant -> a consumer's token
    admin: str
    metrics_port: int = 0  # the gateway's own /metrics listener

    def client(self, tenant: str) -> httpx.Client:
        """An HTTP client with ``tenant``'s consumer token."""
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=15)

    def submit(self, tenant: str, spec: dict[str, Any]) -> str:
        """Submit a task as ``tenant``'s consumer; its id."""
        with self.client(tenant) as http:
            resp = http.post("/api/v1/tasks", json=spec)
            assert resp.status_code == 201, resp.text
            return str(resp.json()["id"])

    def wait(self, tenant: str, task_id: str, timeout_s: float = 90) -> dict[str, Any]:
        """The task once it has ended."""
        deadline = time.monotonic() + timeout_s
        with self.client(tenant) as http:
            while True:
                task: dict[str, Any] = http.get(f"/api/v1/tasks/{task_id}").json()
                if task["state"] in TERMINAL:
                    return task
                assert time.monotonic() < deadline, (task, self.gateway.output()[-3000:])
                time.sleep(0.1)

    def run(self, tenant: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit and wait."""
        return self.wait(tenant, self.submit(tenant, spec))


def stdout(task: dict[str, Any], index: int = 0) -> str:
    """An executor's stdout as the node reports it."""
    return str(task["attempts"][-1]["executors"][index].get("stdout") or "")


def task_spec(script: str, **extra: Any) -> dict[str, Any]:
    """One ``sh -c`` executor on one core."""
    spec: dict[str, Any] = {
        "executors": [{"command": ["sh", "-c", script]}],
        "resources": {"cpu_cores": 1, "ram_gb": 0.5},
    }
    spec.update(extra)
    return spec


def start_site(base: Path) -> Iterator[Site]:
    """Start the node and its root gateway under ``base``; stop them at the end."""
    image = require_isolation()
    base.mkdir(parents=True, exist_ok=True)
    dest, victim_dir, sandbox = base / "dest", base / "victim", base / "tasks"
    dest.mkdir()
    victim_dir.mkdir(mode=0o700)
    (victim_dir / "victim.txt").write_text("original\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node_dir = base / "node"
    allow = f"file://{dest}/"
    node = start_node(node_dir, port, "--url-allow", allow)
    gateway: Proc | None = None
    try:
        admin = admin_token(node)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as http:
            enrol = http.post("/api/v1/providers", json={"label": "iso"}).json()
            tokens = {}
            for tenant, subject in (("acme", "alice"), ("globex", "bob")):
                minted = http.post(
                    "/api/v1/tokens", json={"role": "user", "subject": subject, "tenant": tenant}
                )
                assert minted.status_code == 201, minted.text
                tokens[tenant] = minted.json()["token"]
        state = base / "gateway"
        args = [*CLI, "gateway", "--node", url, "--state-dir", str(state), "--cpus", "4"]
        args += ["--token", enrol["enrolment_token"], "--url-allow", allow]
        metrics_port = free_port()
        args += ["--sandbox-dir", str(sandbox), "--metrics-port", str(metrics_port)]
        env = {"COMPUTENET_RUN_AS": "", "COMPUTENET_CONTAINER_RUNTIMES": "podman"}
        gateway = spawn(args, base / "gateway.log", env)
        yield Site(
            url,
            node,
            gateway,
            node_dir,
            state,
            sandbox,
            dest,
            victim_dir,
            image,
            tokens,
            admin,
            metrics_port,
        )
    finally:
        if gateway is not None:
            gateway.stop()
        node.stop()
