"""How the gateway reaches a service replica's server: through a unix socket it owns.

A replica is a task whose spec carries a ``service`` binding; its server listens on
``$PORT``. The runner makes ``replica.sock`` in the job's directory (under the gateway's state
directory, mode 0700: never inside the task's own directory) and bridges it to the server:

- sandboxed (a root gateway): into the task's own network namespace, to ``127.0.0.1:PORT``
  there (:func:`.netbridge.bridge_in`); the task's network stays empty otherwise;
- unsandboxed (a non-root gateway, whose tasks share the host's network anyway): to a free
  port on the host's loopback, which the runner gives the server as ``$PORT``.

The routing plane's tunnel connects to the socket (``GatewayAgent.replica_sockets``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from computenet.gateway.backends.netbridge import Bridge, BridgeError, socat_path

REPLICA_SOCKET = "replica.sock"
READY_TIMEOUT_S = 5.0


def replica_port(spec: dict[str, Any]) -> int | None:
    """The in-sandbox port of a replica task's server, or None for an ordinary task."""
    binding = spec.get("service")
    if not isinstance(binding, dict):
        return None
    port = binding.get("port")
    return port if isinstance(port, int) else None


def free_port() -> int:
    """A TCP port free on the host's loopback now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def host_bridge(port: int, at_socket: Path, timeout_s: float = READY_TIMEOUT_S) -> Bridge:
    """Make the unix socket ``at_socket`` (mode 0600) and forward each connection to it to
    ``127.0.0.1:port`` on the host; return once the socket exists."""
    socat = socat_path()
    if socat is None:
        raise BridgeError("socat is not installed (scripts/isolation-up.sh installs it)")
    argv = [
        socat,
        f"UNIX-LISTEN:{at_socket.name},fork,unlink-early,mode=600",
        f"TCP:127.0.0.1:{port}",
    ]
    try:
        process = subprocess.Popen(
            argv,
            cwd=at_socket.parent,  # named relative to it: a unix socket's path is short
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: Bridge.close stops its children too
            close_fds=True,
        )
    except OSError as exc:
        raise BridgeError(f"cannot start the replica's bridge: {exc}") from None
    bridge = Bridge(process, at_socket, port, owns_socket=True)
    deadline = time.monotonic() + timeout_s
    while not at_socket.is_socket():
        if not bridge.alive():
            raise BridgeError(f"replica bridge: socat exited with code {process.returncode}")
        if time.monotonic() > deadline:
            bridge.close()
            raise BridgeError(f"replica bridge at {at_socket}: not ready after {timeout_s} s")
        time.sleep(0.002)
    return bridge
