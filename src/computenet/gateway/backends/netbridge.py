"""Bridges between a sandboxed task's own network namespace and unix sockets the gateway owns.

A sandboxed task has a network namespace of its own with nothing but its own loopback (see
:mod:`.bwrap`), so it can reach nothing and nothing can reach it. Where the gateway means to
open one path through, a bridge does it, with socat (a well-kept Debian package) started as
root through ``nsenter --net=/proc/<pid>/ns/net``: socat then lives in the task's network
namespace but in the host's mount namespace, so one end is a TCP port on the task's loopback
and the other a unix socket under the gateway's state directory, which the task cannot see.

- :func:`bridge_out` (egress): connections to ``127.0.0.1:PORT`` inside the task go to a unix
  socket the gateway listens on (the egress proxy of :mod:`computenet.gateway.egress_proxy`).
- :func:`bridge_in` (ingress): connections to a unix socket the bridge makes (mode 0600, in a
  directory of the gateway's) go to ``127.0.0.1:PORT`` inside the task (a service replica's
  server).

The namespace is named by a process in it: the pid bubblewrap reports on its ``--info-fd``
(:func:`sandbox_pid`), or a container's pid from its runtime. A bridge lives until it is
closed, or until its process is killed with the task's control group (pass ``preexec`` that
joins it), and it keeps the namespace alive meanwhile: close it when the task ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

from computenet.errors import ComputeNetError

READY_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
_POLL_S = 0.002
# socat's address syntax gives these characters a meaning; no socket name holds them.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._+-]+$")
_TCP_LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket


class BridgeError(ComputeNetError):
    """A bridge could not be started (the task's namespace is gone, socat is missing...)."""

    reason = "bridge_failed"


@cache
def socat_path() -> str | None:
    """Where ``socat`` is, or None (scripts/isolation-up.sh installs it)."""
    return shutil.which("socat") or (
        "/usr/bin/socat" if os.access("/usr/bin/socat", os.X_OK) else None
    )


def sandbox_pid(info: str | bytes) -> int:
    """The pid (in the host's pid namespace) of a sandbox's first process, from what
    bubblewrap writes on its ``--info-fd``."""
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise BridgeError(f"bubblewrap's info names no child pid: {info!r}") from None


def read_sandbox_pid(stream: IO[bytes]) -> int:
    """Read bubblewrap's ``--info-fd`` JSON to its end (bwrap closes the pipe once it has
    written it) and return the sandbox's pid."""
    return sandbox_pid(stream.read())


@dataclass
class Bridge:
    """One running socat between a task's network namespace and a unix socket."""

    process: subprocess.Popen[bytes]
    socket: Path
    port: int
    owns_socket: bool  # an ingress bridge made the socket, so it removes it

    def alive(self) -> bool:
        """True while socat runs."""
        return self.process.poll() is None

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop socat (and the connections it forked) and remove the socket it made."""
        with contextlib.suppress(ProcessLookupError):
            # socat forks a child per connection, in its own process group with it.
            os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(timeout=timeout_s)
        if self.owns_socket:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _check(pid: int, port: int, socket: Path) -> str:
    if not 1 <= port <= 65535:
        raise BridgeError(f"port {port} is not a TCP port")
    if not socket.is_absolute() or not _PLAIN_PATH.match(socket.name):
        raise BridgeError(
            f"socket {str(socket)!r}: an absolute path whose name has only letters, digits and ._+-"
        )
    socat = socat_path()
    if socat is None:
        raise BridgeError("socat is not installed (scripts/isolation-up.sh installs it)")
    if not Path(f"/proc/{pid}/ns/net").exists():
        raise BridgeError(f"process {pid} (the task's namespace) is gone")
    return socat


def _start(
    pid: int,
    argv: list[str],
    cwd: Path,
    stderr: IO[Any] | int | None,
    preexec: Callable[[], None] | None,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
            cwd=cwd,  # the socket is named relative to it: a unix socket's path is short
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            start_new_session=True,  # its own group: close() stops its forked children too
            close_fds=True,
            preexec_fn=preexec,
        )
    except OSError as exc:
        raise BridgeError(f"cannot start the bridge: {exc}") from None


def _wait_ready(bridge: Bridge, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not bridge.alive():
            raise BridgeError(f"{what}: socat exited with code {bridge.process.returncode}")
        if time.monotonic() > deadline:
            bridge.close()
            raise BridgeError(f"{what}: not ready after {timeout_s} s")
        time.sleep(_POLL_S)


def _listening(socat: int, task: int, port: int) -> bool:
    """True when socat (pid ``socat``) has entered the network namespace of ``task`` and
    something there listens on TCP ``127.0.0.1:port`` (read from that namespace's own
    ``/proc/<pid>/net/tcp``)."""
    local = f"0100007F:{port:04X}"
    try:
        # Until nsenter has switched, socat's /proc/<pid>/net is the host's.
        if os.stat(f"/proc/{socat}/ns/net").st_ino != os.stat(f"/proc/{task}/ns/net").st_ino:
            return False
        lines = Path(f"/proc/{socat}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any((fields := line.split())[1] == local and fields[3] == _TCP_LISTEN for line in lines)


def bridge_out(
    pid: int,
    port: int,
    to_socket: Path,
    *,
    stderr: IO[Any] | int | None = None,
    preexec: Callable[[], None] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Bridge:
    """Listen on ``127.0.0.1:port`` in ``pid``'s network namespace and forward each
    connection to the unix socket ``to_socket`` (which the gateway listens on); return once
    the port listens."""
    socat = _check(pid, port, to_socket)
    argv = [
        socat,
        f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
        f"UNIX-CONNECT:{to_socket.name}",
    ]
    process = _start(pid, argv, to_socket.parent, stderr, preexec)
    bridge = Bridge(process, to_socket, port, owns_socket=False)
    _wait_ready(
        bridge,
        lambda: _listening(bridge.process.pid, pid, port),
        f"egress bridge to {to_socket}",
        ready_timeout_s,
    )
    return bridge


def bridge_in(
    pid: int,
    at_socket: Path,
    port: int,
    *,
    stderr: IO[Any] | int | None = None,
    preexec: Callable[[], None] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Bridge:
    """Make the unix socket ``at_socket`` (mode 0600; its directory must be the gateway's,
    0700) and forward each connection to it to ``127.0.0.1:port`` in ``pid``'s network
    namespace; return once the socket exists. A connection made before the task listens on
    ``port`` is refused (closed at once), as it would be on any host."""
    socat = _check(pid, port, at_socket)
    argv = [
        socat,
        f"UNIX-LISTEN:{at_socket.name},fork,unlink-early,mode=600",
        f"TCP:127.0.0.1:{port}",
    ]
    process = _start(pid, argv, at_socket.parent, stderr, preexec)
    bridge = Bridge(process, at_socket, port, owns_socket=True)
    _wait_ready(bridge, at_socket.is_socket, f"ingress bridge at {at_socket}", ready_timeout_s)
    return bridge
