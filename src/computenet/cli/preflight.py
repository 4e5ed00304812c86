"""Checks a long-running command makes before it touches any state, so a mistake is one
clear line instead of a half-started node (and a traceback from the server library)."""

from __future__ import annotations

import errno
import socket

from computenet.cli.output import fail


def port_free(host: str, port: int, flag: str = "--port") -> None:
    """Exit with one line if ``host:port`` cannot be listened on (in use, or not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port in TIME_WAIT after a stop is free to reuse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is already in use (another node?): "
                    f"stop it or choose another with {flag}"
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
