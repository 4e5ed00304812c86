"""The gateway's outbound tunnel to its node: service requests in, replica responses out.

Providers open no inbound port: the gateway dials its node (a WebSocket at
``/gateway/v1/tunnel``, authenticated with its credential) and the node sends the HTTP requests
for the replicas this gateway runs down it as frames (:mod:`computenet.model.tunnel`). Each
request is passed to its replica's unix socket, which the gateway owns, and the response is
streamed back chunk by chunk as the replica writes it.

The gateway also checks each replica's health through the same socket and reports, about once
a second, raw per-replica counters (in flight, requests, errors, tokens) and the health state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect
from yarl import URL

from computenet.model import tunnel as tf

log = logging.getLogger("computenet.gateway.tunnel")
# How a server reports what it generated (OpenAI's ``usage``); scanned in the response bytes.
_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_TAIL_BYTES = 64  # kept between chunks so a match split across two is still seen


@dataclass(frozen=True)
class HealthPolicy:
    """How replicas are checked: every ``interval_s``, each check within ``timeout_s``;
    ``failures`` checks failing in a row mark a replica unhealthy, one passing heals it."""

    interval_s: float = 1.0
    timeout_s: float = 1.0
    failures: int = 2


@dataclass(frozen=True)
class ReplicaTarget:
    """Where a replica listens (a unix socket the gateway owns), its health path, and its
    service's own health policy (None: the tunnel's default)."""

    socket: Path
    health_path: str = "/health"
    health: HealthPolicy | None = None


@dataclass
class _Stats:
    """Raw counters of one replica, reported as they are (the node derives rates)."""

    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    healthy: bool = False  # until a check passes
    failed_in_row: int = 0
    check_ms: float | None = None

    def as_report(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "requests": self.requests,
            "errors": self.errors,
            "tokens": self.tokens,
            "healthy": self.healthy,
            "check_ms": self.check_ms,
        }


@dataclass
class _Stream:
    """A request the node opened, while it is passed to its replica."""

    task_id: str
    body: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    window: int = tf.WINDOW_BYTES
    credited: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    whole: bool = False  # came as one REQUEST frame: a small answer may go back as RESPONSE


class _Refused(Exception):
    """A request this gateway will not pass on (no such replica, too many streams)."""


class Tunnel:
    """Keeps the tunnel to the node open and serves the requests that come down it."""

    def __init__(
        self,
        node_url: str,
        credential: Callable[[], str | None],
        targets: Callable[[], dict[str, ReplicaTarget]],
        *,
        health: HealthPolicy | None = None,
        report_s: float = 1.0,
        max_streams: int = tf.MAX_STREAMS,
        read_timeout_s: float = 600.0,
        version: int = tf.VERSION,
    ) -> None:
        """``credential`` gives the gateway's credential once enrolled; ``targets`` the
        running replicas (task id -> socket and health path); ``version`` the tunnel version
        it tells the node it speaks (1: no REQUEST/RESPONSE frames, as older gateways)."""
        base = node_url.rstrip("/")
        self.ws_url = "ws" + base.removeprefix("http") + tf.PATH
        self.credential = credential
        self.targets = targets
        self.health = health or HealthPolicy()
        self.report_s = report_s
        self.max_streams = max_streams
        self.read_timeout_s = read_timeout_s
        self.version = version
        self.stats: dict[str, _Stats] = {}
        self.connected = asyncio.Event()
        self._streams: dict[int, _Stream] = {}
        self._known: dict[str, ReplicaTarget] = {}  # targets() as of the last health pass
        self._due: dict[str, float] = {}  # task id -> when its next check is due (monotonic)
        self._clients: dict[Path, aiohttp.ClientSession] = {}
        self._send_lock = asyncio.Lock()

    # ---- running --------------------------------------------------------------------

    async def run(self) -> None:
        """Check health and keep the tunnel up until cancelled, reconnecting with backoff."""
        from computenet.gateway.agent import Backoff  # the agent imports this module

        checks = asyncio.create_task(self._health_loop(), name="replica-health")
        backoff = Backoff(0.2, 5.0)
        try:
            while True:
                cred = self.credential()
                if not cred:  # not enrolled or connected yet: look again soon
                    await asyncio.sleep(0.2)
                    continue
                try:
                    async with connect(
                        self.ws_url,
                        additional_headers={
                            "Authorization": f"Bearer {cred}",
                            tf.VERSION_HEADER: str(self.version),
                        },
                        max_size=tf.MAX_FRAME_BYTES,
                        ping_interval=5.0,
                        ping_timeout=5.0,
                        open_timeout=10.0,
                        compression=None,
                    ) as ws:
                        backoff.reset()
                        await self._serve(ws)
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    log.warning("tunnel to %s lost: %s", self.ws_url, exc)
                except tf.FrameError as exc:
                    log.error("node sent a bad tunnel frame (%s); reconnecting", exc)
                await asyncio.sleep(backoff.next())
        finally:
            checks.cancel()
            for client in self._clients.values():
                await client.close()

    async def _serve(self, ws: ClientConnection) -> None:
        self.connected.set()
        reporter = asyncio.create_task(self._report_loop(ws), name="tunnel-report")
        try:
            async for message in ws:
                self._on_frame(ws, tf.decode(message))
        finally:
            self.connected.clear()
            reporter.cancel()
            for st in list(self._streams.values()):
                if st.worker is not None:
                    st.worker.cancel()
            self._streams.clear()

    def _on_frame(self, ws: ClientConnection, frame: tf.Frame) -> None:
        st = self._streams.get(frame.stream)
        if frame.kind is tf.Kind.OPEN:
            opened = frame.json()
            st = _Stream(str(opened.get("task_id", "")))
            self._streams[frame.stream] = st
            st.worker = asyncio.create_task(self._pass(ws, frame.stream, st, opened))
        elif frame.kind is tf.Kind.REQUEST:
            opened, body = frame.whole()
            st = _Stream(str(opened.get("task_id", "")), whole=True)
            st.body.put_nowait(body)
            st.body.put_nowait(None)
            self._streams[frame.stream] = st
            st.worker = asyncio.create_task(self._pass(ws, frame.stream, st, opened))
        elif st is None:
            return  # a stream that ended meanwhile
        elif frame.kind is tf.Kind.BODY:
            st.body.put_nowait(frame.payload)
        elif frame.kind is tf.Kind.END:
            st.body.put_nowait(None)
        elif frame.kind is tf.Kind.CREDIT:
            st.window += frame.credit()
            st.credited.set()
        elif frame.kind is tf.Kind.RESET and st.worker is not None:
            st.worker.cancel()  # the client went away: stop reading from the replica

    async def _send(self, ws: ClientConnection, data: bytes) -> None:
        async with self._send_lock:
            await ws.send(data)

    # ---- one request ----------------------------------------------------------------

    def _client(self, sock: Path) -> aiohttp.ClientSession:
        client = self._clients.get(sock)
        if client is None or client.closed:
            client = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(sock), limit=self.max_streams),
                timeout=aiohttp.ClientTimeout(sock_read=self.read_timeout_s, sock_connect=5.0),
                # Bytes pass as the replica sent them: no decompression, no added headers.
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            )
            self._clients[sock] = client
        return client

    async def _open(
        self,
        sock: Path,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        retry: bool,
    ) -> aiohttp.ClientResponse:
        """Send a request to a replica; an idempotent one is sent again once when the
        connection fails before an answer (a kept-alive connection the server had closed)."""
        for attempt in (1, 2):
            try:
                return await self._client(sock).request(
                    method,
                    URL("http://replica" + path, encoded=True),  # exactly as the client sent it
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if not retry or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _pass(
        self, ws: ClientConnection, sid: int, st: _Stream, opened: dict[str, object]
    ) -> None:
        stats = self.stats.setdefault(st.task_id, _Stats())
        stats.in_flight += 1
        stats.requests += 1
        head_sent = False
        try:
            target = self._known.get(st.task_id)
            if target is None:  # started since the last health pass
                self._known = self.targets()
                target = self._known.get(st.task_id)
            if target is None:
                raise _Refused(f"replica {st.task_id} does not run on this gateway")
            if len(self._streams) > self.max_streams:
                raise _Refused(f"this gateway has {self.max_streams} requests open already")

            # The node bounds request bodies, so a whole one is held: servers built on
            # Python's http.server read a Content-Length, not a chunked upload.
            parts = []
            while (chunk := await st.body.get()) is not None:
                parts.append(chunk)
            headers = [(str(k), str(v)) for k, v in opened.get("headers", [])]  # type: ignore[attr-defined]
            path = str(opened.get("path", "/"))
            method = str(opened.get("method", "GET"))
            retry = method in _SAFE or any(k == "idempotency-key" for k, _ in headers)
            resp = await self._open(target.socket, method, path, headers, b"".join(parts), retry)
            async with resp:
                head = {
                    "status": resp.status,
                    "headers": tf.pass_headers(
                        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                    ),
                }
                size = resp.content_length
                if st.whole and size is not None and size <= tf.CHUNK_BYTES:
                    # A small answer of known length: head, body and end in one frame. A
                    # stream (no length: server-sent events) goes chunk by chunk below.
                    body = await resp.read()
                    stats.tokens += sum(int(m) for m in _TOKENS.findall(body))
                    await self._send(ws, tf.encode_whole(sid, tf.Kind.RESPONSE, head, body))
                    return
                await self._send(ws, tf.encode_json(sid, tf.Kind.HEAD, head))
                head_sent = True
                tail = b""
                # Bytes as they arrive, so a stream's events are not held back.
                async for read in resp.content.iter_any():
                    for i in range(0, len(read), tf.CHUNK_BYTES):
                        chunk = read[i : i + tf.CHUNK_BYTES]
                        while st.window < len(chunk):
                            st.credited.clear()
                            await st.credited.wait()
                        st.window -= len(chunk)
                        await self._send(ws, tf.encode(sid, tf.Kind.BODY, chunk))
                    seen = tail + read
                    stats.tokens += sum(int(m) for m in _TOKENS.findall(seen))
                    tail = b"" if _TOKENS.search(seen[-_TAIL_BYTES:]) else seen[-_TAIL_BYTES:]
                await self._send(ws, tf.encode(sid, tf.Kind.END))
        except asyncio.CancelledError:
            pass  # the node reset the stream, or the tunnel closed
        except (_Refused, aiohttp.ClientError, TimeoutError, OSError) as exc:
            stats.errors += 1
            reason = str(exc) or type(exc).__name__
            with contextlib.suppress(websockets.WebSocketException):
                await self._send(
                    ws,
                    tf.encode_json(
                        sid, tf.Kind.RESET, {"reason": reason[:500], "before_head": not head_sent}
                    ),
                )
        finally:
            stats.in_flight -= 1
            self._streams.pop(sid, None)

    # ---- health and reports ---------------------------------------------------------

    def _policy(self, target: ReplicaTarget) -> HealthPolicy:
        return target.health or self.health

    async def check_once(self, *, due_only: bool = False) -> None:
        """Check every running replica once (with ``due_only``, those whose own interval
        has passed), in parallel; forget replicas that are gone."""
        targets = self._known = self.targets()
        for gone in set(self.stats) - set(targets):
            if self.stats[gone].in_flight == 0:
                del self.stats[gone]
        for gone in set(self._due) - set(targets):
            del self._due[gone]
        now = time.monotonic()
        chosen = {
            tid: tg for tid, tg in targets.items() if not due_only or self._due.get(tid, 0.0) <= now
        }
        for tid, tg in chosen.items():
            self._due[tid] = now + self._policy(tg).interval_s
        await asyncio.gather(*(self._check(tid, tg) for tid, tg in chosen.items()))

    async def _check(self, task_id: str, target: ReplicaTarget) -> None:
        stats = self.stats.setdefault(task_id, _Stats())
        began = time.perf_counter()
        try:
            async with self._client(target.socket).get(
                URL("http://replica" + target.health_path, encoded=True),
                timeout=aiohttp.ClientTimeout(total=self._policy(target).timeout_s),
            ) as resp:
                await resp.read()
                ok, why = resp.status < 400, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, why = False, str(exc) or type(exc).__name__
        if ok:
            if not stats.healthy:
                log.info("replica %s passes its health check", task_id)
            stats.healthy = True
            stats.failed_in_row = 0
            stats.check_ms = round((time.perf_counter() - began) * 1000, 3)
        else:
            stats.failed_in_row += 1
            if stats.failed_in_row >= self._policy(target).failures and stats.healthy:
                log.warning(
                    "replica %s failed %d health checks: %s", task_id, stats.failed_in_row, why
                )
                stats.healthy = False

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_once(due_only=True)
            except Exception:
                log.exception("replica health checks failed")
            # Wake for the soonest check due (each service has its own interval).
            intervals = [self._policy(tg).interval_s for tg in self._known.values()]
            await asyncio.sleep(min([self.health.interval_s, *intervals]))

    def report(self) -> dict[str, object]:
        """What the next REPORT frame says: per replica counters and health."""
        return {
            "at": time.time(),
            "replicas": {tid: s.as_report() for tid, s in self.stats.items()},
        }

    async def _report_loop(self, ws: ClientConnection) -> None:
        while True:
            await self._send(ws, tf.encode_json(tf.REPORT_STREAM, tf.Kind.REPORT, self.report()))
            await asyncio.sleep(self.report_s)
