"""Tunnel version 2 framing: small requests and answers in one frame each, anything larger (or
streamed) in chunks, and gateways that speak version 1 still served. A real node on loopback,
a real gateway tunnel and a stdlib replica on a unix socket; the frames each side sent are
recorded off the node's end of the tunnel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from computenet.gateway.tunnel import ReplicaTarget
from computenet.model import tunnel as tf
from computenet.model.service import ServiceBinding, key_hash
from computenet.node.routing.tunnels import TunnelConn
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from svcserve import Listed, Placed, replica, run_tunnel, serve_node
from svcserve import wait_until as until

KEY = "sk-frames"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_whole_frames_round_trip_and_bad_ones_are_refused() -> None:
    body = bytes(range(256)) * 3
    frame = tf.decode(tf.encode_whole(7, tf.Kind.REQUEST, {"path": "/x"}, body))
    assert (frame.stream, frame.kind) == (7, tf.Kind.REQUEST)
    assert frame.whole() == ({"path": "/x"}, body)
    empty = tf.decode(tf.encode_whole(1, tf.Kind.RESPONSE, {"status": 204}, b""))
    assert empty.whole() == ({"status": 204}, b"")
    with pytest.raises(tf.FrameError):
        tf.decode(tf.encode(1, tf.Kind.RESPONSE, b"\x00\x00")).whole()  # no JSON length
    with pytest.raises(tf.FrameError):  # says 99 bytes of JSON, has 2
        tf.decode(tf.encode(1, tf.Kind.RESPONSE, b"\x00\x00\x00\x63{}")).whole()
    with pytest.raises(tf.FrameError):
        tf.decode(tf.encode(1, tf.Kind.REQUEST, b"\x00\x00\x00\x02[]")).whole()


class _Recorder:
    """The kinds of the frames a node's tunnel sent and received, per stream."""

    def __init__(self, conn: TunnelConn) -> None:
        self.sent: list[tuple[int, tf.Kind]] = []
        self.got: list[tuple[int, tf.Kind]] = []
        send, on_frame = conn.send, conn.on_frame

        async def sending(data: bytes) -> None:
            f = tf.decode(data)
            self.sent.append((f.stream, f.kind))
            await send(data)

        def receiving(frame: tf.Frame, on_report: Any) -> None:
            if frame.stream != tf.REPORT_STREAM:
                self.got.append((frame.stream, frame.kind))
            on_frame(frame, on_report)

        conn.send = sending  # type: ignore[method-assign]
        conn.on_frame = receiving  # type: ignore[method-assign]

    def kinds(self) -> tuple[list[tf.Kind], list[tf.Kind]]:
        """Kinds sent and received since the last call (credits left out)."""
        sent: list[tf.Kind] = [k for _, k in self.sent if k is not tf.Kind.CREDIT]
        got: list[tf.Kind] = [k for _, k in self.got]
        self.sent.clear()
        self.got.clear()
        return sent, got


@pytest.fixture(params=[tf.VERSION, 1], ids=["v2", "v1-gateway"])
def routed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, _Recorder, int]]:
    version = int(request.param)
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path / "node", node_code="cn", region="11"))
    admin = {"Authorization": f"Bearer {rt.bootstrap().admin_token}"}
    listed = Listed()
    rt.metric_plane.directory = listed
    sock = tmp_path / "r.sock"
    binding = ServiceBinding(name="echo", replica=0, key_hashes=[key_hash(KEY)], home_node="cn")
    with serve_node(rt) as url:
        r = httpx.post(f"{url}/api/v1/providers", json={"label": "p"}, headers=admin)
        enrol = {"token": r.json()["enrolment_token"], "name": "gw"}
        got = httpx.post(f"{url}/gateway/v1/enrol", json=enrol).json()
        listed.placed["echo"] = [Placed("cn.t0", binding, got["gateway_id"], "cn")]
        targets = {"cn.t0": ReplicaTarget(sock)}
        with replica(sock, "r0"), run_tunnel(url, got["credential"], lambda: targets, version):
            hub = rt.metric_plane.tunnels
            conn = until("the tunnel", lambda: hub.get(got["gateway_id"]))
            until("a healthy replica", lambda: rt.metric_plane.healthy("cn.t0"))
            assert conn.version == version
            yield url, _Recorder(conn), version


def test_small_and_large_requests_and_answers_round_trip_exactly(
    routed: tuple[str, _Recorder, int],
) -> None:
    url, frames, version = routed
    base = f"{url}/services/v1/echo"
    K = tf.Kind
    with httpx.Client(timeout=30) as client:
        small = "x" * 1000
        r = client.post(f"{base}/echo?a=1", content=small, headers=AUTH)
        assert r.status_code == 200
        assert (r.json()["body"], r.json()["path"]) == (small, "/echo?a=1")
        sent, got = frames.kinds()
        if version >= 2:  # one frame each way
            assert (sent, got) == ([K.REQUEST], [K.RESPONSE])
        else:
            assert (sent, got) == ([K.OPEN, K.BODY, K.END], [K.HEAD, K.BODY, K.END])

        # Over one chunk each way: the request goes in chunks, the answer streams.
        large = "".join(chr(ord("a") + i % 26) for i in range(3 * tf.CHUNK_BYTES + 17))
        r = client.post(f"{base}/echo", content=large, headers=AUTH)
        assert r.status_code == 200 and r.json()["body"] == large
        sent, got = frames.kinds()
        assert sent[0] is K.OPEN and sent[-1] is K.END and sent.count(K.BODY) == 4
        assert got[0] is K.HEAD and got[-1] is K.END and K.RESPONSE not in got

        for n in (0, 100, tf.CHUNK_BYTES, tf.CHUNK_BYTES + 1, 5 * tf.CHUNK_BYTES + 3):
            r = client.get(f"{base}/blob/{n}", headers=AUTH)
            assert r.status_code == 200
            assert r.content == bytes(i % 251 for i in range(n)), n
            sent, got = frames.kinds()
            if version >= 2 and n <= tf.CHUNK_BYTES:
                assert got == [K.RESPONSE], n
                assert r.headers["content-length"] == str(n)
            else:
                assert got[0] is K.HEAD and got[-1] is K.END and K.RESPONSE not in got, n
            if n > tf.CHUNK_BYTES:
                assert got.count(K.BODY) >= 2

        head = client.head(f"{base}/echo", headers=AUTH)
        assert head.status_code == 200 and head.content == b""
        frames.kinds()

        # A stream of events (no Content-Length) is never held back for one frame.
        with client.stream("GET", f"{base}/stream", headers=AUTH) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line]
        assert [e["i"] for e in events] == [0, 1, 2, 3]
        _sent, got = frames.kinds()
        assert got[0] is K.HEAD and got.count(K.BODY) >= 4 and K.RESPONSE not in got
