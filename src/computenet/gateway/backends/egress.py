"""The runner's side of a pool's egress allow-list (:mod:`computenet.model.egress`).

For a sandboxed task on a pool that lists endpoints, the runner starts the task's egress proxy
(:mod:`computenet.gateway.egress_proxy`) on a unix socket in the job's directory, and each
executor's sandbox is held (:class:`.bwrap.SandboxGate`) until a bridge
(:func:`.netbridge.bridge_out`) listens on ``127.0.0.1:3128`` in its network namespace: the
task's first instruction already finds its proxy. The task's network namespace stays its own
and empty otherwise, so a program that ignores the proxy variables reaches nothing at all.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from computenet.gateway.backends.cgroups import TaskCgroup
from computenet.gateway.backends.netbridge import Bridge, BridgeError, bridge_out
from computenet.model.egress import TASK_PROXY_PORT

EGRESS_SOCKET = "egress.sock"
EGRESS_LOG = "egress.log"
PROXY_READY_TIMEOUT_S = 10.0
PROXY_STOP_TIMEOUT_S = 2.0
# Loopback inside the sandbox is the task's own: reached directly, never through the proxy.
NO_PROXY = "localhost,127.0.0.1,::1"


def proxy_env() -> dict[str, str]:
    """The variables that point a task's HTTP clients at its proxy (both spellings: curl
    reads only the lower-case ``http_proxy``, others only the upper-case)."""
    url = f"http://127.0.0.1:{TASK_PROXY_PORT}"
    env: dict[str, str] = {}
    for name, value in (
        ("http_proxy", url),
        ("https_proxy", url),
        ("all_proxy", url),
        ("no_proxy", NO_PROXY),
    ):
        env[name] = env[name.upper()] = value
    return env


def start_proxy(jobdir: Path, allow: list[str], forbid: list[str]) -> subprocess.Popen[bytes]:
    """Start the task's egress proxy on ``jobdir/egress.sock``; it logs to
    ``jobdir/egress.log`` and ends when this process does."""
    argv = [
        sys.executable,
        "-m",
        "computenet.gateway.egress_proxy",
        "--socket",
        str(jobdir / EGRESS_SOCKET),
        "--log",
        str(jobdir / EGRESS_LOG),
    ]
    for entry in allow:
        argv += ["--allow", entry]
    for addr in forbid:
        argv += ["--forbid", addr]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)


def stop_proxy(proxy: subprocess.Popen[bytes]) -> None:
    """Stop the proxy (bounded)."""
    proxy.terminate()
    try:
        proxy.wait(timeout=PROXY_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proxy.kill()
        proxy.wait()


def _wait_for_proxy(proxy: subprocess.Popen[bytes], socket_path: Path) -> None:
    deadline = time.monotonic() + PROXY_READY_TIMEOUT_S
    while not socket_path.is_socket():
        if proxy.poll() is not None:
            raise BridgeError(f"the egress proxy exited with code {proxy.returncode}")
        if time.monotonic() > deadline:
            raise BridgeError(f"the egress proxy did not start within {PROXY_READY_TIMEOUT_S} s")
        time.sleep(0.002)


def copy_refusals(log: Path, offset: int, err: IO[bytes]) -> int:
    """Append the proxy's refusals logged since ``offset`` to an executor's stderr (the
    task's log); return the new offset."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    for line in data.splitlines():
        if b" refused: " in line:
            err.write(b"computenet egress: " + line + b"\n")
    return offset + len(data)


def egress_bridge(
    pid: int, proxy: subprocess.Popen[bytes], jobdir: Path, cgroup: TaskCgroup | None
) -> Bridge:
    """Bridge ``127.0.0.1:3128`` in ``pid``'s network namespace (a sandbox's, a
    container's) to the task's proxy, once the proxy listens. The bridge joins the task's
    control group, so that killing the group ends it too."""
    _wait_for_proxy(proxy, jobdir / EGRESS_SOCKET)
    return bridge_out(
        pid,
        TASK_PROXY_PORT,
        jobdir / EGRESS_SOCKET,
        preexec=cgroup.join if cgroup is not None else None,
    )
