"""Real servers for the routing tests (helper module, not a test file): a stdlib HTTP replica
on a unix socket, a node served by uvicorn on loopback, and a gateway tunnel in a thread."""

from __future__ import annotations

import asyncio
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import uvicorn

from computenet.gateway.tunnel import HealthPolicy, ReplicaTarget, Tunnel
from computenet.model import tunnel as tf
from computenet.model.service import ServiceBinding
from computenet.model.task import TaskState
from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from nodeproc import free_port

STREAM_EVENTS = 4
STREAM_GAP_S = 0.2  # between streamed events: the test checks they arrive apart


class _Replica(BaseHTTPRequestHandler):
    """A replica: /health, /echo (method, path, headers, body as JSON), /stream (SSE),
    /blob/<n> (n binary bytes with a Content-Length)."""

    protocol_version = "HTTP/1.1"
    server: _UnixHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _answer(self) -> None:
        if self.server.dead:  # as a crashed server: the connection drops, no answer
            self.close_connection = True
            return
        self.server.seen += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/health":
            out = b'{"ok":true}'
            self.send_response(200 if self.server.healthy else 503)
        elif self.path.startswith("/blob/"):  # /blob/<n>: n bytes of every byte value
            n = int(self.path.removeprefix("/blob/"))
            out = bytes(i % 251 for i in range(n))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(out)
            return
        elif self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(STREAM_EVENTS):
                data = f"data: {json.dumps({'i': i, 't': time.monotonic()})}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(STREAM_GAP_S)
            self.wfile.write(b"0\r\n\r\n")
            return
        else:
            usage = {"completion_tokens": 7} if self.path.startswith("/v1/") else None
            out = json.dumps(
                {
                    "replica": self.server.name,
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(errors="replace"),
                    "usage": usage,
                }
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _answer


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path, _Replica)
        self.name = name
        self.healthy = True
        self.dead = False
        self.seen = 0


@contextmanager
def replica(sock: Path, name: str) -> Iterator[_UnixHTTPServer]:
    """Serve a replica on unix socket ``sock`` until the block ends."""
    server = _UnixHTTPServer(str(sock), name)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.dead = True  # kept-alive connections must not serve on
        server.shutdown()
        server.server_close()
        sock.unlink(missing_ok=True)


@contextmanager
def serve_node(rt: NodeRuntime, port: int | None = None) -> Iterator[str]:
    """Serve a bootstrapped runtime over HTTP on loopback; yield its URL."""
    port = port or free_port()
    config = uvicorn.Config(
        create_app(rt), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "node did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def run_tunnel(
    node_url: str,
    credential: str,
    targets: Callable[[], dict[str, ReplicaTarget]],
    version: int = tf.VERSION,
) -> Iterator[Tunnel]:
    """A gateway's tunnel (speaking tunnel ``version``) in its own thread and event loop."""
    loop = asyncio.new_event_loop()
    tunnel = Tunnel(
        node_url,
        lambda: credential,
        targets,
        health=HealthPolicy(interval_s=0.2, timeout_s=1.0, failures=2),
        report_s=0.2,
        version=version,
    )
    started = threading.Event()
    holder: dict[str, asyncio.Task[None]] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        holder["task"] = loop.create_task(tunnel.run())
        started.set()
        try:
            loop.run_until_complete(holder["task"])
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield tunnel
    finally:
        loop.call_soon_threadsafe(holder["task"].cancel)
        thread.join(timeout=10)


@dataclass(frozen=True)
class Placed:
    """A replica placement as the service directory lists it."""

    task_id: str
    binding: ServiceBinding
    gateway_id: str | None
    node_code: str
    region: str | None = "11"
    version: str = "1"
    replica: int = 0
    state: TaskState = TaskState.RUNNING
    pool_cpi: str = ""
    price_per_card_hour: Decimal = Decimal("1")


@dataclass
class Listed:
    """A fixed list of placements per service, for router tests that need no controller."""

    placed: dict[str, list[Placed]] = field(default_factory=dict)

    def replicas(self, name: str) -> list[Any]:
        return list(self.placed.get(name, []))

    def find(self, name: str) -> Any:
        return None  # not deployed here: requests count under tenant "-"


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll ``check`` (bounded) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
