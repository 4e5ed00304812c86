"""Bridges between a real bubblewrap sandbox's network namespace and unix sockets the
gateway owns (gateway/backends/netbridge.py), both ways, with real socat (issues 14, 18)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_testing import unavailable
from computenet.gateway.backends.bwrap import bwrap_command, bwrap_path
from computenet.gateway.backends.netbridge import (
    BridgeError,
    bridge_in,
    bridge_out,
    read_sandbox_pid,
    socat_path,
)
from isolation_site import require_isolation
from nodeproc import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="entering namespaces needs root")
TASK_UID = 62950  # outside the gateway's default range; nothing runs as it


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    """The task's directory (its uid's) and the gateway's private one (0700, root's)."""
    if bwrap_path() is None or socat_path() is None:
        require_isolation()  # installs them in CI (COMPUTENET_INSTALL_ISOLATION=1)
        socat_path.cache_clear()
        bwrap_path.cache_clear()
        if bwrap_path() is None or socat_path() is None:
            unavailable("bwrap or socat is missing: scripts/isolation-up.sh installs them")
    top = Path(tempfile.mkdtemp(prefix="cn-bridge-", dir="/tmp"))
    top.chmod(0o711)
    work, private = top / "work", top / "gw"
    work.mkdir(mode=0o700)
    os.chown(work, TASK_UID, TASK_UID)
    private.mkdir(mode=0o700)
    yield work, private
    shutil.rmtree(top, ignore_errors=True)


def _sandbox(work: Path, script: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start ``python3 -c script`` in a sandbox that waits before running it; return the
    process, the sandbox's pid and the descriptor that lets it go."""
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    argv = bwrap_command(
        ["python3", "-c", script],
        work=work,
        roots=[],
        chdir=str(work),
        uid=TASK_UID,
        gid=TASK_UID,
        info_fd=info_w,
        block_fd=block_r,
    )
    proc = subprocess.Popen(
        argv, pass_fds=(info_w, block_r), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    os.close(info_w)
    os.close(block_r)
    with os.fdopen(info_r, "rb") as info:
        pid = read_sandbox_pid(info)
    return proc, pid, block_w


def _go(block_w: int) -> None:
    os.write(block_w, b"1")
    os.close(block_w)


def test_bridge_out_reaches_only_the_gateways_socket(dirs: tuple[Path, Path]) -> None:
    work, private = dirs
    sock_path = private / "egress.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(4)
    server.settimeout(20)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            got.append(conn.recv(100))
            conn.sendall(b"pong:" + got[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = free_port()  # free on the host's loopback: the task's own is another one
    script = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
        "s.sendall(b'ping'); print(s.recv(100).decode())\n"
    )
    proc, pid, block_w = _sandbox(work, script)
    try:
        with bridge_out(pid, port, sock_path) as bridge:
            # The port listens in the task's namespace only, not on the host's loopback.
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            _go(block_w)
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 0, out
            assert out.decode().strip() == "pong:ping" and got == [b"ping"]
        assert not bridge.alive()
        assert sock_path.exists()  # the gateway's socket: not the bridge's to remove
    finally:
        proc.kill()
        proc.wait()
        server.close()
        thread.join(timeout=5)


def test_bridge_in_reaches_the_tasks_port_through_a_private_socket(
    dirs: tuple[Path, Path],
) -> None:
    work, private = dirs
    sock_path = private / "replica.sock"
    port = 8080  # the task's own loopback: no clash with the host's
    script = (
        "import socket\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "c, _ = s.accept(); c.sendall(b'hello from the task:' + c.recv(100)); c.close()\n"
    )
    proc, pid, block_w = _sandbox(work, script)
    try:
        with bridge_in(pid, sock_path, port) as bridge:
            assert sock_path.stat().st_mode & 0o777 == 0o600
            _go(block_w)
            answer = b""
            deadline = time.monotonic() + 20
            while not answer:  # refused (closed at once) until the task listens
                assert time.monotonic() < deadline, proc.stdout
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.settimeout(10)
                    client.connect(str(sock_path))
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        client.sendall(b"hi")
                        answer = client.recv(100)
                if not answer:
                    time.sleep(0.05)
            assert answer == b"hello from the task:hi"
            assert proc.wait(timeout=20) == 0
        assert not bridge.alive() and not sock_path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_bridge_into_a_namespace_that_is_gone_fails_clearly(dirs: tuple[Path, Path]) -> None:
    _work, private = dirs
    gone = 2**22 + 1  # above any pid_max default: no such process
    with pytest.raises(BridgeError, match="is gone"):
        bridge_in(gone, private / "x.sock", 8080)
    with pytest.raises(BridgeError, match="only letters"):
        bridge_out(os.getpid(), 3128, private / "a,b.sock")
