"""The node's end of the gateway tunnels: open a request on a replica, stream its answer.

One :class:`TunnelConn` per connected gateway reads frames off its WebSocket and hands them to
the stream they belong to; :meth:`TunnelConn.open` sends a request and returns an
:class:`Upstream` whose body the router streams to its client, crediting the gateway as the
client takes the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from computenet.model import tunnel as tf

log = logging.getLogger("computenet.node.routing")


class UpstreamError(Exception):
    """A request that failed on its way to or from a replica.

    ``before_head``: no response byte reached the client yet, so an idempotent request may be
    retried on another replica.
    """

    def __init__(self, reason: str, before_head: bool) -> None:
        super().__init__(reason)
        self.before_head = before_head


@dataclass
class _Stream:
    head: asyncio.Future[dict[str, Any]]
    chunks: asyncio.Queue[bytes | UpstreamError | None] = field(default_factory=asyncio.Queue)


class Upstream:
    """A replica's response: status and headers, then its body as it arrives."""

    def __init__(self, conn: TunnelConn, sid: int, head: dict[str, Any], st: _Stream) -> None:
        self.status = int(head.get("status", 502))
        self.headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in head["headers"]]
        self._conn = conn
        self._sid = sid
        self._st = st
        self._done = False

    def complete(self) -> bytes | None:
        """The whole body when it has already arrived (a small answer: its frames come
        together), else None and nothing taken. Lets the router answer without streaming."""
        items = self._st.chunks._queue  # type: ignore[attr-defined]  # peek, not take
        if not items or items[-1] is not None or any(isinstance(i, UpstreamError) for i in items):
            return None
        parts = [self._st.chunks.get_nowait() for _ in range(len(items))]
        self._done = True
        self._conn.streams.pop(self._sid, None)
        return b"".join(p for p in parts if isinstance(p, bytes))

    async def body(self) -> AsyncIterator[bytes]:
        """The body chunks as the replica sends them; raises UpstreamError when cut off."""
        owed = 0
        try:
            while True:
                item = await self._st.chunks.get()
                if item is None:
                    self._done = True
                    return
                if isinstance(item, UpstreamError):
                    self._done = True
                    raise item
                yield item
                # Returned once the client took the bytes (the yield resumed), in batches.
                owed += len(item)
                if owed >= tf.WINDOW_BYTES // 2:
                    await self._conn.send(tf.encode_credit(self._sid, owed))
                    owed = 0
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream; tell the gateway when it has not ended by itself."""
        if not self._done:
            self._done = True
            with contextlib.suppress(Exception):
                await self._conn.send(tf.encode_json(self._sid, tf.Kind.RESET, {"reason": "gone"}))
        self._conn.streams.pop(self._sid, None)


class TunnelConn:
    """One gateway's open tunnel."""

    def __init__(
        self, gateway_id: str, ws: WebSocket, max_streams: int = tf.MAX_STREAMS, version: int = 1
    ) -> None:
        self.gateway_id = gateway_id
        self.ws = ws
        self.version = version  # the gateway's tunnel version: 2 takes REQUEST frames
        self.max_streams = max_streams
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self._next_id = 0
        self._send_lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        """Send one frame (frames of concurrent streams are interleaved whole)."""
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def open(
        self, task_id: str, method: str, path: str, headers: list[list[str]], body: bytes
    ) -> Upstream:
        """Send a request to replica ``task_id``; return once its status line arrives."""
        if self.closed:
            raise UpstreamError(f"gateway {self.gateway_id} disconnected", before_head=True)
        if len(self.streams) >= self.max_streams:
            raise UpstreamError(
                f"gateway {self.gateway_id} has {self.max_streams} requests open", True
            )
        self._next_id += 1
        sid = self._next_id
        st = _Stream(asyncio.get_running_loop().create_future())
        self.streams[sid] = st
        opened = {"task_id": task_id, "method": method, "path": path, "headers": headers}
        try:
            if self.version >= 2 and len(body) <= tf.CHUNK_BYTES:
                # One frame, one send: most service requests are small.
                await self.send(tf.encode_whole(sid, tf.Kind.REQUEST, opened, body))
            else:
                await self.send(tf.encode_json(sid, tf.Kind.OPEN, opened))
                for i in range(0, len(body), tf.CHUNK_BYTES):
                    await self.send(tf.encode(sid, tf.Kind.BODY, body[i : i + tf.CHUNK_BYTES]))
                await self.send(tf.encode(sid, tf.Kind.END))
            head = await st.head
        except UpstreamError:
            self.streams.pop(sid, None)
            raise
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self.streams.pop(sid, None)
            raise UpstreamError(f"tunnel to {self.gateway_id} failed: {exc}", True) from None
        except asyncio.CancelledError:
            self.streams.pop(sid, None)
            with contextlib.suppress(Exception):
                await self.send(tf.encode_json(sid, tf.Kind.RESET, {"reason": "gone"}))
            raise
        return Upstream(self, sid, head, st)

    def on_frame(self, frame: tf.Frame, on_report: Callable[[str, dict[str, Any]], None]) -> None:
        """Hand one frame from the gateway to its stream."""
        if frame.kind is tf.Kind.REPORT:
            on_report(self.gateway_id, frame.json())
            return
        st = self.streams.get(frame.stream)
        if st is None:
            return
        if frame.kind is tf.Kind.HEAD:
            if not st.head.done():
                st.head.set_result(frame.json())
        elif frame.kind is tf.Kind.RESPONSE:
            head, body = frame.whole()
            if not st.head.done():
                st.chunks.put_nowait(body)
                st.chunks.put_nowait(None)
                st.head.set_result(head)
        elif frame.kind is tf.Kind.BODY:
            st.chunks.put_nowait(frame.payload)
        elif frame.kind is tf.Kind.END:
            st.chunks.put_nowait(None)
        elif frame.kind is tf.Kind.RESET:
            info = frame.json()
            self._fail(st, str(info.get("reason", "reset by gateway")))

    def _fail(self, st: _Stream, reason: str) -> None:
        if not st.head.done():
            st.head.set_exception(UpstreamError(reason, before_head=True))
        else:
            st.chunks.put_nowait(UpstreamError(reason, before_head=False))

    def close(self) -> None:
        """The WebSocket is gone: fail every open stream."""
        self.closed = True
        for st in list(self.streams.values()):
            self._fail(st, f"gateway {self.gateway_id} disconnected")
        self.streams.clear()


class TunnelHub:
    """The open tunnels of this node's gateways, by gateway id."""

    def __init__(self, on_report: Callable[[str, dict[str, Any]], None]) -> None:
        self.conns: dict[str, TunnelConn] = {}
        self.on_report = on_report
        self.on_change: list[Callable[[str, bool], None]] = []

    def get(self, gateway_id: str) -> TunnelConn | None:
        """The live tunnel of a gateway, if it has one."""
        conn = self.conns.get(gateway_id)
        return conn if conn is not None and not conn.closed else None

    async def serve(self, gateway_id: str, ws: WebSocket, version: int = 1) -> None:
        """Read an accepted WebSocket until it closes; a newer tunnel replaces an older one.
        ``version``: the tunnel version the gateway speaks."""
        conn = TunnelConn(gateway_id, ws, version=version)
        old = self.conns.get(gateway_id)
        self.conns[gateway_id] = conn
        if old is not None:
            old.close()
        for hook in self.on_change:
            hook(gateway_id, True)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    raise tf.FrameError("text frames are not tunnel frames")
                conn.on_frame(tf.decode(data), self.on_report)
        except tf.FrameError as exc:
            log.warning("gateway %s sent a bad frame: %s; closing its tunnel", gateway_id, exc)
            with contextlib.suppress(Exception):
                await ws.close(code=1002)
        except WebSocketDisconnect:
            pass
        finally:
            conn.close()
            if self.conns.get(gateway_id) is conn:
                del self.conns[gateway_id]
                for hook in self.on_change:
                    hook(gateway_id, False)
