"""A real service replica end to end on one node (issue 18): ``computenet service deploy``
makes a replica task, the scheduler places it on a root gateway's pool, the gateway runs the
server in its sandbox (own uid, own empty network) and reaches it only through the unix
socket it owns; scale, logs, delete from the CLI; the replica's card-hours are billed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend_testing import unavailable
from computenet.gateway.backends.bwrap import bwrap_path
from computenet.gateway.backends.ingress import replica_socket_path
from computenet.gateway.backends.netbridge import socat_path
from isolation_site import require_isolation
from nodeproc import CLI, Proc, admin_token, cli, free_port, spawn, start_node

pytestmark = pytest.mark.slow

SERVICE = """
name: files
executor:
  command:
    - sh
    - -c
    - mkdir -p site && echo hello-from-replica > site/hello.txt &&
      exec python3 -m http.server "$PORT" --bind 127.0.0.1 --directory site
resources: {cpu_cores: 1, ram_gb: 0.5}
replicas: {min: 1, max: 2}
"""


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("a sandboxed replica needs a root gateway")
    if bwrap_path() is None or socat_path() is None:
        require_isolation()
        socat_path.cache_clear()
        bwrap_path.cache_clear()
        if bwrap_path() is None or socat_path() is None:
            unavailable("bwrap or socat is missing: scripts/isolation-up.sh installs them")
    path = Path(tempfile.mkdtemp(prefix="cn-svc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _status(env: dict[str, str]) -> dict[str, Any]:
    r = cli("service", "status", "files", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def _running(env: dict[str, str], n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        reps = [x for x in _status(env).get("replicas", []) if x["state"] == "RUNNING"]
        if len(reps) >= n and all(x.get("gateway") for x in reps):
            return reps
        assert time.monotonic() < deadline, _status(env)
        time.sleep(0.2)


def _socket(gw_dir: Path, task_id: str) -> Path:
    deadline = time.monotonic() + 30
    while True:
        found = [
            sock
            for job in (gw_dir / "jobs").glob(f"{task_id}.*")
            if (sock := replica_socket_path(gw_dir, job.name)).is_socket()
        ]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the gateway made no socket for the replica"
        time.sleep(0.1)


def _stop_runners(gw_dir: Path) -> None:
    """Runners outlive their gateway by design: stop this test's (a clean cancel each)."""
    for pid_file in (gw_dir / "jobs").glob("*/runner.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _get(sock: Path, path: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5) as http:
        while True:
            try:
                return http.get(f"http://replica{path}")
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the replica never answered"
                time.sleep(0.1)


def test_deploy_reach_scale_logs_delete_and_bill_a_real_replica(
    tmp_path: Path, sandbox_dir: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port)
    gateway: Proc | None = None
    try:
        token = admin_token(node)
        gw_dir = tmp_path / "gw"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            enrol = http.post("/api/v1/providers", json={"label": "prov"}).json()
        node_code = http_node_code(url, token)
        gateway = spawn(
            [
                *CLI, "gateway", "--node", url, "--state-dir", str(gw_dir), "--cpus", "2",
                "--token", enrol["enrolment_token"], "--sandbox-dir", str(sandbox_dir),
            ],
            tmp_path / "gw.log",
            env={"COMPUTENET_RUN_AS": ""},  # a root gateway: sandboxed tasks
        )  # fmt: skip
        env = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": token}
        (tmp_path / "service.yaml").write_text(SERVICE)
        r = cli("service", "deploy", "-f", str(tmp_path / "service.yaml"), env=env)
        assert r.returncode == 0, r.stderr
        assert "deployed version 1" in r.stdout and "cnsk_" in r.stdout

        first = _running(env, 1)[0]
        sock = _socket(gw_dir, first["task_id"])
        assert _get(sock, "/hello.txt").text == "hello-from-replica\n"
        assert first["node"] == node_code and first["region"] == "11"

        # The server's request log (stderr) comes back through `service logs`.
        deadline = time.monotonic() + 30
        while "GET /hello.txt" not in (
            out := cli("service", "logs", "files", "--stream", "stderr", env=env).stdout
        ):
            assert time.monotonic() < deadline, out
            time.sleep(0.3)

        r = cli("service", "scale", "files", "--min", "2", env=env)
        assert r.returncode == 0, r.stderr
        both = _running(env, 2)
        assert {x["replica"] for x in both} == {0, 1}
        second = next(x for x in both if x["task_id"] != first["task_id"])
        assert _get(_socket(gw_dir, second["task_id"]), "/hello.txt").status_code == 200

        listed = json.loads(cli("service", "list", "--json", env=env).stdout)
        assert [(s["name"], s["live"]) for s in listed] == [("files", 2)]

        r = cli("service", "delete", "files", env=env)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        while cli("service", "status", "files", env=env).returncode == 0:
            assert time.monotonic() < deadline, _status(env)
            time.sleep(0.3)
        gone = cli("service", "status", "files", env=env)
        assert gone.returncode == 1 and "no service 'files'" in gone.stderr
        assert not sock.exists()
        # Each replica task was metered like any task: its core-hours are on the bill.
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            for rep in (first, second):
                task = http.get(f"/api/v1/tasks/{rep['task_id']}").json()
                assert task["state"] == "CANCELED"
                assert task["usage"] and float(task["usage"][0]["wall_s"]) > 0, task
    finally:
        if gateway is not None:
            gateway.stop()
            _stop_runners(gw_dir)
        node.stop()


def http_node_code(url: str, token: str) -> str:
    """The node's code, from its API."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        return str(http.get("/api/v1/node").json()["code"])


def test_the_tinylm_example_serves_completions_through_the_gateways_socket(
    tmp_path: Path,
) -> None:
    """The example service as shipped, deployed on `computenet up` (an unsandboxed gateway:
    the replica gets a free host port behind the same kind of socket)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port, "--cpus", "2", up=True)
    gw_dir = tmp_path / "node" / "gateway"
    try:
        env = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": admin_token(node)}
        example = Path(__file__).resolve().parents[2] / "examples/services/tinylm/service.yaml"
        r = cli("service", "deploy", "-f", str(example), "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["key"].startswith("cnsk_")
        deadline = time.monotonic() + 60
        while True:
            r = cli("service", "status", "tinylm", "--json", env=env)
            reps = [x for x in json.loads(r.stdout).get("replicas", []) if x["state"] == "RUNNING"]
            if reps:
                break
            assert time.monotonic() < deadline, r.stdout
            time.sleep(0.3)
        sock = _socket(gw_dir, reps[0]["task_id"])
        deadline = time.monotonic() + 30
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://replica", timeout=10) as http:
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "tinylm never became healthy"
                time.sleep(0.1)
            models = http.get("/v1/models").json()
            assert [m["id"] for m in models["data"]] == ["tinylm"]
            body = {"model": "tinylm", "prompt": "The node", "max_tokens": 8, "seed": 1}
            out = http.post("/v1/completions", json=body).json()
            assert out["choices"][0]["text"] and out["usage"]["completion_tokens"] > 0
        r = cli("service", "delete", "tinylm", env=env)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        while cli("service", "status", "tinylm", env=env).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        node.stop()
        _stop_runners(gw_dir)
