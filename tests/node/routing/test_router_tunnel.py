"""The router and the gateway tunnel together, for real: a node served on loopback, a gateway
tunnel over a WebSocket, and stdlib HTTP replicas on unix sockets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from computenet.gateway.tunnel import ReplicaTarget
from computenet.model.service import ServiceBinding, key_hash
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from svcserve import STREAM_EVENTS, STREAM_GAP_S, Listed, Placed, replica, run_tunnel, serve_node
from svcserve import wait_until as until

KEY = "sk-test-key"


@dataclass
class Setup:
    url: str
    rt: NodeRuntime
    admin: dict[str, str]
    gateway_id: str
    credential: str
    listed: Listed
    tmp: Path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Setup]:
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path / "node", node_code="cn", region="11"))
    admin = {"Authorization": f"Bearer {rt.bootstrap().admin_token}"}
    listed = Listed()
    rt.metric_plane.directory = listed
    rt.metric_plane.settings.directory_ttl_s = 0.0
    with serve_node(rt) as url:
        r = httpx.post(f"{url}/api/v1/providers", json={"label": "p"}, headers=admin)
        enrol = {"token": r.json()["enrolment_token"], "name": "gw"}
        got = httpx.post(f"{url}/gateway/v1/enrol", json=enrol).json()
        yield Setup(url, rt, admin, got["gateway_id"], got["credential"], listed, tmp_path)


def _binding(access: str = "key") -> ServiceBinding:
    return ServiceBinding(
        name="echo", replica=0, key_hashes=[key_hash(KEY)], access=access, home_node="cn"
    )


def test_requests_pass_through_the_tunnel_with_auth_streaming_and_limits(node: Setup) -> None:
    sock = node.tmp / "r0.sock"
    node.listed.placed["echo"] = [Placed("cn.t0", _binding(), node.gateway_id, "cn")]
    targets = {"cn.t0": ReplicaTarget(sock)}
    with replica(sock, "r0"), run_tunnel(node.url, node.credential, lambda: targets):
        until("a healthy replica", lambda: node.rt.metric_plane.healthy("cn.t0"))
        base = f"{node.url}/services/v1/echo"
        assert httpx.get(f"{base}/x").status_code == 401
        assert httpx.get(f"{base}/x", headers={"Authorization": "Bearer nope"}).status_code == 401
        # The node's own admin token is not a service key.
        assert httpx.get(f"{base}/x", headers=node.admin).status_code == 401
        ok = {"Authorization": f"Bearer {KEY}", "X-Custom": "kept"}
        r = httpx.post(f"{base}/v1/chat?q=1&b=%20", content=b"hello", headers=ok)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["path"] == "/v1/chat?q=1&b=%20"
        assert got["method"] == "POST" and got["body"] == "hello"
        assert got["headers"]["x-custom"] == "kept"
        assert "authorization" not in got["headers"]
        assert "x-computenet-forward" not in got["headers"]
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            assert httpx.request(method, f"{base}/m", headers=ok).json()["method"] == method
        # Streamed events arrive as the replica sends them, not all at the end.
        arrived = []
        with httpx.stream("GET", f"{base}/stream", headers=ok) as s:
            assert s.headers["content-type"] == "text/event-stream"
            for line in s.iter_lines():
                if line.startswith("data:"):
                    arrived.append(time.monotonic())
        assert len(arrived) == STREAM_EVENTS
        gaps = [b - a for a, b in itertools.pairwise(arrived)]
        assert min(gaps) > STREAM_GAP_S / 2, gaps
        big = b"x" * (node.rt.settings.routing.max_body_bytes + 1)
        r = httpx.post(f"{base}/v1/x", content=big, headers=ok)
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        # What the replica served is counted for the bill (issue 18): the POST, the four
        # methods and the stream; refused requests never reached it.
        assert node.rt.metric_plane.served_counts() == {"cn.t0": 6}
        # Reports reach the metric plane: requests, tokens, and the API view.
        until(
            "a counted request rate",
            lambda: node.rt.metric_plane.service_load("echo").requests_per_s,
        )
        m = httpx.get(f"{node.url}/api/v1/services/echo/metrics", headers=node.admin).json()
        assert m["replicas"][0]["healthy"] is True
        site = m["sites"][0]
        assert site["site"] == "cn" and 0 <= site["overall"] <= 10
        assert {s["category"] for s in site["scores"]} == {"compute", "network", "cost"}
        assert all({"source", "statistic", "window_s"} <= set(s) for s in site["scores"])
        # Latency as the router saw it: the stream (~0.8 s to its last event) tops the totals,
        # while first bytes came early.
        for where in (m["replicas"][0], site):
            lat = {
                (x["name"], x["statistic"]): x["value"]
                for x in where["metrics"]
                if x["name"].startswith("latency_")
            }
            assert lat["latency_total_ms", "p99"] > 600, lat
            assert lat["latency_ttfb_ms", "p50"] < 600, lat
        series = httpx.get(f"{node.url}/api/v1/services/echo/latency", headers=node.admin).json()
        by_kind = {(x["kind"], x["key"]): x["points"] for x in series["series"]}
        assert set(by_kind) == {("site", "cn"), ("replica", "cn.t0")}
        assert (
            sum(p["requests"] for p in by_kind["replica", "cn.t0"]) == 6
        )  # 413s and 401s never reach it
        assert all(p["p50_ms"] <= p["p95_ms"] for p in by_kind["site", "cn"])
        # Service traffic is not node state: it stays out of the audit log.
        audited = httpx.get(
            f"{node.url}/api/v1/audit", params={"path_prefix": "/services/"}, headers=node.admin
        ).json()
        assert audited["events"] == [], audited
        prom = httpx.get(f"{node.url}/metrics").text
        assert 'computenet_service_replica_healthy{task="cn.t0"} 1.0' in prom
        assert "computenet_service_requests_total" in prom
        assert 'computenet_service_latency_seconds_count{phase="total",target="cn.t0"}' in prom


def test_public_service_needs_no_key(node: Setup) -> None:
    sock = node.tmp / "p.sock"
    node.listed.placed["echo"] = [Placed("cn.t0", _binding("public"), node.gateway_id, "cn")]
    with (
        replica(sock, "r0"),
        run_tunnel(node.url, node.credential, lambda: {"cn.t0": ReplicaTarget(sock)}),
    ):
        until("a healthy replica", lambda: node.rt.metric_plane.healthy("cn.t0"))
        r = httpx.get(f"{node.url}/services/v1/echo/hi", headers={"Authorization": "Bearer x"})
        assert r.status_code == 200
        # Unknown to this node, which has no parent to ask.
        assert httpx.get(f"{node.url}/services/v1/other/hi").status_code == 404


def test_a_failing_replica_gets_no_requests_and_idempotent_ones_are_retried(
    node: Setup,
) -> None:
    socks = [node.tmp / "a.sock", node.tmp / "b.sock"]
    node.listed.placed["echo"] = [
        Placed(f"cn.t{i}", _binding(), node.gateway_id, "cn", replica=i) for i in range(2)
    ]
    targets = {f"cn.t{i}": ReplicaTarget(s) for i, s in enumerate(socks)}
    plane = node.rt.metric_plane
    ok = {"Authorization": f"Bearer {KEY}"}
    with replica(socks[1], "b") as b, run_tunnel(node.url, node.credential, lambda: targets):
        with replica(socks[0], "a") as a:
            until("two healthy replicas", lambda: plane.healthy("cn.t0") and plane.healthy("cn.t1"))
            served = {
                httpx.get(f"{node.url}/services/v1/echo/x", headers=ok).json()["replica"]
                for _ in range(30)
            }
            assert served == {"a", "b"}  # both take requests
        # Replica a is gone (its socket closed). Every GET still succeeds (retried on b),
        # and within 5 s a gets no requests at all.
        died = time.monotonic()
        seen_before = a.seen
        while plane.healthy("cn.t0"):
            r = httpx.get(f"{node.url}/services/v1/echo/x", headers=ok)
            assert r.status_code == 200 and r.json()["replica"] == "b"
            assert time.monotonic() - died < 5.0
        assert a.seen == seen_before
        # A POST without an Idempotency-Key is not retried; with one it is.
        for _ in range(5):
            r = httpx.post(f"{node.url}/services/v1/echo/v1/x", headers=ok, content=b"{}")
            assert r.status_code == 200 and r.json()["replica"] == "b"
        b.healthy = False  # failing health checks take it out too
        until("b unhealthy", lambda: not plane.healthy("cn.t1"))
        r = httpx.get(f"{node.url}/services/v1/echo/x", headers=ok)
        assert r.status_code == 503 and r.json()["error"] == "no-replica"


def test_the_tunnel_refuses_a_caller_without_a_gateway_credential(node: Setup) -> None:
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    async def attempt(header: dict[str, str]) -> str:
        ws_url = node.url.replace("http", "ws") + "/gateway/v1/tunnel"
        try:
            async with connect(ws_url, additional_headers=header, open_timeout=5) as ws:
                await ws.recv()
        except InvalidStatus as exc:
            return f"status {exc.response.status_code}"
        except WebSocketException as exc:
            return type(exc).__name__
        return "open"

    assert asyncio.run(attempt({})) != "open"
    assert asyncio.run(attempt(node.admin)) != "open"
