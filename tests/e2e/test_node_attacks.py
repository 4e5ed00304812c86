"""Issue 14, attack classes 2 and 7 against a real ``computenet up`` (node and its local
gateway in one process) with an ordinary consumer token, plus its files at rest.

2. ``up`` used to open ``file:///`` and loopback to every tenant: a tenant read and wrote any
   host path through staging. Now it opens nothing unless its operator says so.
7. URL checks walked around: a redirect from an allowed server to an internal one, IPv6 forms
   that embed an internal IPv4 address. Real HTTP servers on loopback: 127.0.0.2 stands for a
   data server the operator opened, 127.0.0.1 for an internal service holding a secret.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeproc import Proc, admin_token, free_port, start_node
from polling import wait_for

pytestmark = pytest.mark.slow
SECRET = "HOST-SECRET-9f2c"
OPENED = "127.0.0.2/32"


@dataclass
class Up:
    url: str
    user: dict[str, str]
    proc: Proc
    data: Path
    base: Path
    inside: str  # base URL of the internal service
    inside_asked: list[str]
    data_server: str  # base URL of the opened server, which redirects inside


def _serve(address: str, reply: Any) -> tuple[ThreadingHTTPServer, list[str]]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _go(self, body: bool) -> None:
            asked.append(self.path)
            status, headers, payload = reply(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._go(True)

        def do_HEAD(self) -> None:
            self._go(False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    base = tmp_path_factory.mktemp("attacks")
    (base / "host-secret.txt").write_text(SECRET)
    inside, inside_asked = _serve("127.0.0.1", lambda _p: (200, {}, SECRET.encode()))
    inside_url = f"http://127.0.0.1:{inside.server_address[1]}"
    data_server, _ = _serve(
        "127.0.0.2", lambda path: (302, {"Location": f"{inside_url}/secret{path}"}, b"")
    )
    port = free_port()
    data = base / "node"
    proc = start_node(data, port, "--cpus", "1", "--url-allow", OPENED, up=True)
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {admin_token(proc)}"}
    r = httpx.post(
        f"{url}/api/v1/tokens",
        json={"role": "user", "subject": "mallory", "tenant": "evil"},
        headers=admin,
    )
    r.raise_for_status()
    user = {"Authorization": f"Bearer {r.json()['token']}"}
    try:
        yield Up(
            url,
            user,
            proc,
            data,
            base,
            inside_url,
            inside_asked,
            f"http://127.0.0.2:{data_server.server_address[1]}",
        )
    finally:
        proc.stop()
        for server in (inside, data_server):
            server.shutdown()
            server.server_close()


def _task(**fields: Any) -> dict[str, Any]:
    return {"executors": [{"command": ["sh", "-c", "cat /data/in 2>/dev/null; true"]}], **fields}


def _submit(up: Up, task: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{up.url}/api/v1/tasks", json=task, headers=up.user, timeout=10)


def test_the_banner_says_what_is_open(up: Up) -> None:
    assert f"data URLs open to tasks beyond public addresses: {OPENED}" in up.proc.output()


def test_class2_a_tenant_cannot_read_or_write_host_files_through_staging(up: Up) -> None:
    target = up.base / "planted.txt"
    attempts = [
        {"inputs": [{"url": f"file://{up.base}/host-secret.txt", "path": "/data/in"}]},
        {"inputs": [{"url": "file:///etc/shadow", "path": "/data/in"}]},
        {"inputs": [{"url": f"{up.base}/host-secret.txt", "path": "/data/in"}]},  # bare path
        {"outputs": [{"url": f"file://{target}", "path": "/data/in"}]},
        {"outputs": [{"url": "file:///etc/cron.d/owned", "path": "/data/in"}]},
        {"inputs": [{"url": f"{up.inside}/secret", "path": "/data/in"}]},  # loopback
    ]
    for task in attempts:
        r = _submit(up, _task(**task))
        assert r.status_code == 400, (task, r.text)
        assert r.json()["error"] == "invalid_input" and r.json()["message"], r.text
    assert not target.exists()
    assert not Path("/etc/cron.d/owned").exists()
    assert up.inside_asked == []


@pytest.mark.parametrize(
    "host",
    ["[64:ff9b::7f00:1]", "[::127.0.0.1]", "[2002:7f00:1::1]", "[::ffff:127.0.0.1]"],
)
def test_class7_ipv6_forms_of_an_internal_address_are_refused(up: Up, host: str) -> None:
    port = up.inside.rsplit(":", 1)[1]
    r = _submit(up, _task(inputs=[{"url": f"http://{host}:{port}/secret", "path": "/data/in"}]))
    assert r.status_code == 400 and "internal address" in r.json()["message"], r.text


def test_class7_a_redirect_from_an_opened_server_to_an_internal_one_is_refused(up: Up) -> None:
    # The node accepts the URL (the operator opened 127.0.0.2); its gateway fetches it, is
    # redirected to 127.0.0.1, and refuses that hop.
    r = _submit(up, _task(inputs=[{"url": f"{up.data_server}/data.csv", "path": "/data/in"}]))
    assert r.status_code == 201, r.text
    tid = r.json()["id"]

    def ended() -> dict[str, Any] | None:
        got: dict[str, Any] = httpx.get(
            f"{up.url}/api/v1/tasks/{tid}", headers=up.user, timeout=10
        ).json()
        return got if got["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR") else None

    task = wait_for(ended, 60, "the redirected task to end")
    assert task["state"] == "SYSTEM_ERROR", task
    events = " ".join(e["message"] for e in task["events"])
    assert "refused by this gateway" in events and "127.0.0.1" in events, events
    assert up.inside_asked == []  # the internal service was never reached
    text = httpx.get(f"{up.url}/api/v1/tasks/{tid}", headers=up.user, timeout=10).text
    assert SECRET not in text


def test_the_nodes_files_at_rest_are_its_own(up: Up) -> None:
    assert stat.S_IMODE(up.data.stat().st_mode) == 0o700
    for f in up.data.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
