"""How the gateway reaches a service replica's server: through a unix socket it owns.

A replica is a task whose spec carries a ``service`` binding; its server listens on
``$PORT``. The runner makes a socket in the gateway's ``sockets`` directory (under its state
directory, mode 0700: never inside the task's own directory; a short name, as a unix
socket's path must fit 108 bytes) and bridges it to the server:

- sandboxed (a root gateway): into the task's own network namespace, to ``127.0.0.1:PORT``
  there (:func:`.netbridge.bridge_in`); the task's network stays empty otherwise;
- unsandboxed (a non-root gateway, whose tasks share the host's network anyway): to a free
  port on the host's loopback, which the runner gives the server as ``$PORT``;
- in a container image (a root gateway with podman or docker, the container's network
  ``none``): into the container's network namespace, found by its pid, as for a sandbox.

The routing plane's tunnel connects to the socket (``GatewayAgent.replica_sockets``).
"""

from __future__ import annotations

import ctypes
import hashlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from computenet.gateway.backends.containers import podman_global_options
from computenet.gateway.backends.netbridge import Bridge, BridgeError, socat_path

SOCKETS_DIR = "sockets"
READY_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1  # prctl(2)
CONTAINER_START_TIMEOUT_S = 60.0  # an image may have to be unpacked first
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with its NUL: longer paths cannot connect


def replica_socket_path(state_dir: Path, job_key: str) -> Path:
    """Where the socket of job ``job_key``'s replica lives: a short name in the gateway's
    ``sockets`` directory, so the whole path fits a unix socket address."""
    name = hashlib.sha256(job_key.encode()).hexdigest()[:16]
    return state_dir / SOCKETS_DIR / f"{name}.sock"


def sockets_dir(state_dir: Path) -> Path:
    """The gateway's directory of replica sockets (0700: the gateway's alone), made if
    needed; ``BridgeError`` when its paths would be too long to connect to."""
    path = state_dir / SOCKETS_DIR
    longest = len(str(replica_socket_path(state_dir, "x")).encode())
    if longest > MAX_SOCKET_PATH:
        raise BridgeError(
            f"the gateway's state directory {state_dir} is too long a path for a unix socket "
            f"({longest} > {MAX_SOCKET_PATH} bytes): give the gateway a shorter --state-dir"
        )
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def replica_port(spec: dict[str, Any]) -> int | None:
    """The in-sandbox port of a replica task's server, or None for an ordinary task."""
    binding = spec.get("service")
    if not isinstance(binding, dict):
        return None
    port = binding.get("port")
    return port if isinstance(port, int) else None


def container_pid(
    runtime: str,
    name: str,
    client: subprocess.Popen[bytes],
    timeout_s: float = CONTAINER_START_TIMEOUT_S,
) -> int:
    """The host pid of container ``name``'s first process (its network namespace is the
    replica's), once the runtime has started it; ``BridgeError`` if it never does."""
    argv = [runtime, *(podman_global_options() if runtime == "podman" else [])]
    argv += ["inspect", "--format", "{{.State.Pid}}", name]
    deadline = time.monotonic() + timeout_s
    while True:
        if client.poll() is not None:
            raise BridgeError(f"the replica's container exited (code {client.returncode})")
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BridgeError(f"cannot ask {runtime} for the container: {exc}") from None
        pid = out.stdout.strip()
        if out.returncode == 0 and pid.isdigit() and int(pid) > 0:
            return int(pid)
        if time.monotonic() > deadline:
            raise BridgeError(f"the replica's container did not start within {timeout_s} s")
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port free on the host's loopback now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the bridge, before it runs socat: be sent SIGTERM when the runner dies, even by
    SIGKILL (a forced cancel), rather than serve a socket for a server that is gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
            preexec_fn=_die_with_parent,
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
