"""The egress proxy of one task on a pool with an allow-list: ``python -m
computenet.gateway.egress_proxy --socket S --allow HOST:PORT ... --log L``.

The task keeps its own empty network namespace; the runner starts this proxy on a unix socket
in the job's directory (the gateway's, 0700) and bridges it to ``127.0.0.1:3128`` inside the
sandbox (:func:`computenet.gateway.backends.netbridge.bridge_out`), and the task's
environment names it in ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``. It speaks the two forms
HTTP clients use through a proxy: ``CONNECT host:port`` (HTTPS and any TCP protocol: a tunnel)
and a plain-HTTP request in absolute form (``GET http://host/path``, sent on as one request
with ``Connection: close``). Each is judged by :func:`computenet.model.egress.judge`: the
host resolved once, every address checked, then the connection made to an address judged.
A refusal answers 403 with the reason and is written to the log, which the runner copies into
the executor's stderr. The proxy ends when its parent (the runner) does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from computenet.model.egress import EgressRule, judge, parse_rules
from computenet.model.urlpolicy import Address

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64  # at once, per task: a task cannot spend the gateway's descriptors
_CHUNK = 64 * 1024
_DROPPED_HEADERS = frozenset({b"proxy-connection", b"proxy-authorization", b"connection"})

Lookup = Callable[[str, int], list[str]]


class Refused(Exception):
    """A request the proxy will not carry out; the message says why."""


def local_address(addr: Address) -> bool:
    """True when ``addr`` belongs to this host (the kernel lets a socket bind to it)."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(addr), 0))
        except OSError:
            return False
    return True


def system_lookup(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused(f"cannot resolve {host}") from None
    return sorted({str(info[4][0]) for info in infos})


@dataclass
class EgressProxy:
    """The allow-list, what is never reached, and where decisions are written."""

    rules: list[EgressRule]
    forbidden: set[Address] = field(default_factory=set)
    log_path: Path | None = None
    lookup: Lookup = system_lookup
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS))

    def note(self, line: str) -> None:
        """Write one decision to the log."""
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``; raise :class:`Refused` otherwise."""
        host = host.lower().strip("[]").rstrip(".")
        if not any(r.matches(host, port) for r in self.rules):
            raise Refused(f"{host}:{port} is not on this pool's egress allow-list")
        found = await asyncio.to_thread(self.lookup, host, port)
        local = {a for a in found if local_address(ipaddress.ip_address(a.split("%")[0]))}
        forbidden = self.forbidden | {ipaddress.ip_address(a.split("%")[0]) for a in local}
        why = judge(self.rules, host, port, found, forbidden)
        if why is not None:
            raise Refused(why)
        return found

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection from the task: one CONNECT tunnel or one plain request."""
        async with self._slots:
            try:
                await self._serve(reader, writer)
            except Refused as exc:
                self.note(f"refused: {exc}")
                body = f"refused by the gateway's egress policy: {exc}\n".encode()
                with contextlib.suppress(OSError):
                    writer.write(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                pass
            finally:
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        request_line, *header_lines = head[:-4].split(b"\r\n")
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise Refused("not an HTTP/1 proxy request")
        method, target, version = parts
        if method == "CONNECT":
            host, port = _host_port(target)
            upstream = await self._connect(host, port, f"CONNECT {target}")
            writer.write(f"{version} 200 Connection established\r\n\r\n".encode())
            await writer.drain()
            await _pipe_both(reader, writer, *upstream)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            raise Refused(f"{method} {target}: only CONNECT, or http:// in absolute form")
        port = url.port or 80
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        up_reader, up_writer = await self._connect(url.hostname, port, f"{method} {target}")
        kept = [
            h for h in header_lines if h.split(b":", 1)[0].strip().lower() not in _DROPPED_HEADERS
        ]
        up_writer.write(
            f"{method} {path} {version}\r\n".encode("latin-1")
            + b"".join(h + b"\r\n" for h in kept)
            + b"Connection: close\r\n\r\n"
        )
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _connect(
        self, host: str, port: int, what: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        found = await self.resolve(host, port)
        last: OSError | None = None
        for addr in found:  # connect only to the addresses judged
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(addr, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                last = exc if isinstance(exc, OSError) else OSError(str(exc))
                continue
            self.note(f"allowed: {what} -> {addr}:{port}")
            return conn
        self.note(f"failed: {what}: {last}")
        raise OSError(f"cannot connect to {host}:{port}: {last}")


def _host_port(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise Refused(f"{target}: expected HOST:PORT")
    return host.strip("[]"), int(port)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):
        dst.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.close()


async def serve(proxy: EgressProxy, socket_path: Path, parent: int) -> None:
    """Serve on ``socket_path`` (0600) until the process ``parent`` is gone."""
    # Bound by its name in its directory: a unix socket's whole path must be short.
    os.chdir(socket_path.parent)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path.name)
    old_mask = os.umask(0o177)  # 0600 from the start
    try:
        server = await asyncio.start_unix_server(
            proxy.handle, socket_path.name, limit=MAX_HEAD_BYTES
        )
    finally:
        os.umask(old_mask)
    async with server:
        while os.getppid() == parent:  # the runner died or ended: so do we
            await asyncio.sleep(0.5)


def main(argv: list[str]) -> int:
    """Entry point (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="computenet.gateway.egress_proxy")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--forbid", action="append", default=[], help="an address never reached")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    proxy = EgressProxy(
        parse_rules(args.allow),
        {ipaddress.ip_address(a) for a in args.forbid},
        args.log.resolve() if args.log else None,
    )
    asyncio.run(serve(proxy, args.socket.resolve(), os.getppid()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
