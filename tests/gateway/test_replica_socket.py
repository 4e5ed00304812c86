"""A service replica on the local backend is reached through a unix socket the gateway owns
(issue 18): sandboxed, bridged into the task's own network namespace (real bubblewrap and
socat); unsandboxed, to a free port on the host's loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend_testing import unavailable
from computenet.gateway.agent import GatewayAgent, _Tracked
from computenet.gateway.backends.base import Job
from computenet.gateway.backends.bwrap import bwrap_path
from computenet.gateway.backends.local import LocalBackend
from computenet.gateway.backends.netbridge import socat_path
from computenet.gateway.backends.sandbox import Sandbox
from computenet.model.pool import PoolSpec, Software
from computenet.model.service import ServiceSpec
from computenet.model.task import TaskSpec, TaskState
from isolation_site import require_isolation

POOL = PoolSpec(label="host", cpu_cores=2, memory_mib=4096)
# The replica's server: what it serves says which port it was given, and whether it can
# reach anything outside (a sandboxed one must not).
SERVER = (
    "python3 - <<'EOF'\n"
    "import http.server, os, socket\n"
    "port = int(os.environ['PORT'])\n"
    "try:\n"
    "    socket.create_connection(('1.1.1.1', 53), timeout=1).close(); net = 'open'\n"
    "except OSError:\n"
    "    net = 'none'\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = f'replica port={port} net={net} path={self.path}'.encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()\n"
    "EOF\n"
)


def _replica(n: int = 1) -> Job:
    spec = ServiceSpec.model_validate(
        {"name": "echo", "executor": {"command": ["sh", "-c", SERVER]}}
    ).replica_task(0, [], "cn", default_time_limit_s=600)
    return Job(f"cn-R{n}", 1, f"lease{n}", "cn/local/host", spec)


def _get(sock: Path, path: str) -> httpx.Response:
    """GET through the unix socket, until the server inside listens (bounded)."""
    deadline = time.monotonic() + 20
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5) as http:
        while True:
            try:
                return http.get(f"http://replica{path}")
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the replica never answered"
                time.sleep(0.05)


def _socket(backend: LocalBackend, job: Job) -> Path:
    deadline = time.monotonic() + 20
    while (sock := backend.replica_socket(job)) is None:
        status = backend.status(job)
        assert not status.state.terminal, status
        assert time.monotonic() < deadline, "no replica socket"
        time.sleep(0.05)
    return sock


def _stop(backend: LocalBackend, job: Job, sock: Path) -> None:
    backend.cancel(job)
    deadline = time.monotonic() + 20
    while not backend.status(job).state.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not sock.exists()  # the bridge went with the replica
    assert backend.replica_socket(job) is None


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("a sandboxed replica needs a root gateway")
    if bwrap_path() is None or socat_path() is None:
        require_isolation()  # installs them in CI (COMPUTENET_INSTALL_ISOLATION=1)
        socat_path.cache_clear()
        bwrap_path.cache_clear()
        if bwrap_path() is None or socat_path() is None:
            unavailable("bwrap or socat is missing: scripts/isolation-up.sh installs them")
    # Not under tmp_path: that is private to root, so the task's uid could not reach it.
    path = Path(tempfile.mkdtemp(prefix="cn-replica-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_sandboxed_replica_is_reached_only_through_the_gateways_socket(
    tmp_path: Path, sandbox_root: Path
) -> None:
    sandbox = Sandbox(root=sandbox_root, first_uid=62970, last_uid=62979)
    backend = LocalBackend(tmp_path / "gw", [POOL], sandbox=sandbox)
    job = _replica()
    backend.submit(job)
    sock = _socket(backend, job)
    try:
        # The gateway's own directory holds it, private to the gateway; not the task's.
        assert sock.is_relative_to(tmp_path / "gw")
        assert not sock.is_relative_to(sandbox_root)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert len(str(sock)) < 108
        r = _get(sock, "/v1/models")
        assert r.status_code == 200
        # PORT is the binding's port inside the task's own (empty) network namespace.
        assert r.text == "replica port=8080 net=none path=/v1/models"
        # The gateway agent hands the socket to the tunnel while the replica runs.
        agent = GatewayAgent("http://127.0.0.1:9", tmp_path / "gw", backend)
        agent.tracked[job.key] = _Tracked(job, reported=TaskState.RUNNING)
        assert agent.replica_sockets() == {job.task_id: sock}
    finally:
        _stop(backend, job, sock)


def test_an_unsandboxed_replica_gets_a_free_host_port_behind_the_socket(tmp_path: Path) -> None:
    if socat_path() is None:
        require_isolation()
        socat_path.cache_clear()
        if socat_path() is None:
            unavailable("socat is missing: scripts/isolation-up.sh installs it")
    backend = LocalBackend(tmp_path / "gw", [POOL])
    job = _replica(2)
    backend.submit(job)
    sock = _socket(backend, job)
    try:
        text = _get(sock, "/health").text
        port = int(text.split()[1].removeprefix("port="))
        assert port != 8080 and text.endswith("path=/health")
    finally:
        _stop(backend, job, sock)


def test_an_ordinary_task_has_no_replica_socket(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "gw", [POOL])
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    job = Job("cn-T1", 1, "l", "cn/local/host", spec)
    assert backend.replica_socket(job) is None


def test_a_replica_in_a_podman_image_is_reached_the_same_way(
    tmp_path: Path, sandbox_root: Path
) -> None:
    image = require_isolation()  # podman and the local test image (installed in CI)
    pool = POOL.model_copy(update={"software": Software(container_runtimes=["podman"])})
    backend = LocalBackend(
        tmp_path / "gw", [pool], sandbox=Sandbox(root=sandbox_root, first_uid=62990, last_uid=62999)
    )
    script = 'exec busybox httpd -f -p "127.0.0.1:$PORT" -h /www'
    spec = ServiceSpec.model_validate(
        {
            "name": "boxed",
            "executor": {"image": image, "command": ["sh", "-c", script]},
            "inputs": [{"path": "/www/hello.txt", "content": "hello-from-podman\n"}],
        }
    ).replica_task(0, [], "cn", default_time_limit_s=600)
    job = Job("cn-R3", 1, "lease3", "cn/local/host", spec)
    backend.submit(job)
    sock = _socket(backend, job)
    try:
        assert _get(sock, "/hello.txt").text == "hello-from-podman\n"
    finally:
        _stop(backend, job, sock)


def test_an_unsandboxed_replicas_bridge_dies_with_its_runner(tmp_path: Path) -> None:
    if socat_path() is None:
        unavailable("socat is missing: scripts/isolation-up.sh installs it")
    backend = LocalBackend(tmp_path / "gw", [POOL])
    job = _replica(4)
    backend.submit(job)
    sock = _socket(backend, job)
    jobdir = tmp_path / "gw" / "jobs" / job.key
    server_group = json.loads((jobdir / "status.json").read_text())["pgid"]
    try:
        assert _get(sock, "/").status_code == 200
        os.kill(int((jobdir / "runner.pid").read_text()), signal.SIGKILL)  # a forced cancel
        deadline = time.monotonic() + 20
        while True:  # no bridge is left serving a socket for a server no runner watches
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
            except OSError:
                break
            assert time.monotonic() < deadline, "the bridge outlived its runner"
            time.sleep(0.05)
        assert backend.replica_socket(job) is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server_group, signal.SIGKILL)
