"""A pool's egress allow-list (issue 14): against a real node and a root gateway whose pool
lists endpoints, a sandboxed task reaches a listed server on another host (a network
namespace of its own, behind a veth pair) through its proxy, and nothing else: not a port
that is not listed, not loopback, not the gateway's host nor the node, even where the list
names them, and never directly (its own network namespace stays empty)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend_testing import unavailable
from isolation_site import TERMINAL, require_isolation, stdout
from nodeproc import CLI, admin_token, free_port, spawn, start_node

pytestmark = pytest.mark.slow
_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello-egress"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
        print("served", self.path, flush=True)
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def remote_host(tmp_path: Path) -> Iterator[tuple[str, int, Path, str]]:
    """An HTTP server on another "host": a network namespace behind a veth pair, at an
    address that is not this host's (so only a listed private address reaches it); also the
    address this host has on that link (one of the gateway's own)."""
    if os.geteuid() != 0:
        unavailable("a network namespace for the test server needs root")
    require_isolation()
    tag = os.getpid() % 200 + 20
    ns, host_if, ns_if = f"cn-egress-{tag}", f"cneg{tag}h", f"cneg{tag}n"
    host_addr, ns_addr = f"10.213.{tag}.1", f"10.213.{tag}.2"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    _ip("netns", "add", ns)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        port = free_port()
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns, "python3", "-c", _SERVER, ns_addr, str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((ns_addr, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        log.write_bytes(b"")  # the readiness probe is no task's request
        yield ns_addr, port, log, host_addr
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


_TASK = """
import os, socket, sys, urllib.request
remote, port, node_port, host_ip = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print("proxy", os.environ.get("HTTPS_PROXY"), os.environ.get("http_proxy"))
print("urllib", urllib.request.urlopen(f"http://{remote}:{port}/plain", timeout=10).read().decode())

def connect(target, then=b""):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
    head = s.recv(4096).split(b"\\r\\n")[0].decode()
    if then and " 200 " in head:
        s.sendall(then)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        head += " " + data.split(b"\\r\\n\\r\\n", 1)[-1].decode()
    return head

get = f"GET /tunnel HTTP/1.0\\r\\nHost: {remote}\\r\\n\\r\\n".encode()
print("tunnel", connect(f"{remote}:{port}", get))
for target in [f"{remote}:{port + 1}", f"localhost:{node_port}", f"{host_ip}:{node_port}",
               f"127.0.0.1:{node_port}", f"[::1]:{node_port}"]:
    print("refused?", target, connect(target))
for host, p in [(remote, port), ("127.0.0.1", node_port), (host_ip, node_port)]:
    try:
        socket.create_connection((host, p), timeout=2).close(); print("direct OPEN", host)
    except OSError as exc:
        print("direct refused", type(exc).__name__)
"""


def test_a_pool_egress_list_opens_exactly_what_it_lists(
    tmp_path: Path, remote_host: tuple[str, int, Path, str]
) -> None:
    remote, port, served, host_ip = remote_host
    port_node = free_port()
    url = f"http://127.0.0.1:{port_node}"
    pools = [
        {
            "label": "egress",
            "cpu_cores": 2,
            "memory_mib": 2048,
            # The gateway's own host and a name for loopback are listed on purpose: neither
            # is ever reached.
            "egress": [f"{remote}:{port}", f"localhost:{port_node}", f"{host_ip}:{port_node}"],
        }
    ]
    (tmp_path / "pools.json").write_text(json.dumps(pools))
    node = start_node(tmp_path / "node", port_node)
    gateway = None
    # Not under tmp_path, which is root's alone: the task's uid must reach its directory.
    sandbox = Path(tempfile.mkdtemp(prefix="cn-egress-", dir="/tmp"))
    try:
        admin = admin_token(node)
        auth = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=auth, timeout=15) as http:
            enrol = http.post("/api/v1/providers", json={"label": "eg"}).json()
            args = [*CLI, "gateway", "--node", url, "--state-dir", str(tmp_path / "gw")]
            args += [
                "--token",
                enrol["enrolment_token"],
                "--pools-file",
                str(tmp_path / "pools.json"),
            ]
            args += ["--sandbox-dir", str(sandbox)]
            gateway = spawn(args, tmp_path / "gateway.log", {"COMPUTENET_RUN_AS": ""})
            argv = ["python3", "-c", _TASK, remote, str(port), str(port_node), host_ip]
            spec = {"executors": [{"command": argv}], "resources": {"cpu_cores": 1, "ram_gb": 0.5}}
            deadline = time.monotonic() + 60
            while (resp := http.post("/api/v1/tasks", json=spec)).status_code != 201:
                assert time.monotonic() < deadline, resp.text  # until the gateway has enrolled
                time.sleep(0.2)
            tid = resp.json()["id"]
            while (task := http.get(f"/api/v1/tasks/{tid}").json())["state"] not in TERMINAL:
                assert time.monotonic() < deadline, gateway.output()[-3000:]
                time.sleep(0.1)
    finally:
        if gateway is not None:
            gateway.stop()
        node.stop()
        shutil.rmtree(sandbox, ignore_errors=True)
    assert task["state"] == "COMPLETE", (task.get("attempts"), served.read_text())
    lines = stdout(task).splitlines()
    assert lines[0] == "proxy http://127.0.0.1:3128 http://127.0.0.1:3128", lines
    assert lines[1] == "urllib hello-egress", lines
    assert lines[2].startswith("tunnel HTTP/1.1 200 ") and lines[2].endswith("hello-egress")
    refused = lines[3:8]
    assert all(" 403 " in line for line in refused), refused
    assert all(line.startswith("direct refused") for line in lines[8:]), lines
    assert len(lines) == 11, lines
    # The server saw the two requests through the proxy, and nothing else.
    assert served.read_text().split() == ["served", "/plain", "served", "/tunnel"]
    stderr = task["attempts"][-1]["executors"][0].get("stderr") or ""
    for why in ("not on this pool's egress allow-list", "loopback", "this gateway or its node"):
        assert why in stderr, stderr
