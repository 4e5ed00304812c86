"""The pure parts of routing: frames, site scores and ranking, two choices, the metric plane's
health and load rules on an injected clock."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from computenet.model import tunnel as tf
from computenet.model.service import MetricCategory, ServiceBinding
from computenet.node.routing.config import RoutingSettings
from computenet.node.routing.plane import MetricPlane
from computenet.node.routing.select import Site, category_scores, rank_sites, two_choices
from computenet.node.routing.tunnels import TunnelConn
from svcserve import Listed, Placed

W = {MetricCategory.NETWORK: 0.5, MetricCategory.COMPUTE: 0.3, MetricCategory.COST: 0.2}


def _site(code: str, region: str, rtt_ms: float, **kw: Any) -> Site:
    base: dict[str, Any] = {
        "local": False,
        "healthy_replicas": 1,
        "in_flight": 0,
        "price_per_card_hour": 1.0,
    }
    return Site(code=code, region=region, rtt_ms=rtt_ms, **{**base, **kw})


def test_frames_round_trip_and_refuse_garbage() -> None:
    f = tf.decode(tf.encode_json(7, tf.Kind.OPEN, {"path": "/x"}))
    assert (f.stream, f.kind, f.json()) == (7, tf.Kind.OPEN, {"path": "/x"})
    assert tf.decode(tf.encode_credit(3, 65536)).credit() == 65536
    for bad in (b"", b"\x00\x00\x00\x01", "text", tf.HEADER.pack(1, 99)):
        with pytest.raises(tf.FrameError):
            tf.decode(bad)
    with pytest.raises(tf.FrameError):
        tf.decode(tf.encode(1, tf.Kind.HEAD, b"[1]")).json()
    kept = tf.pass_headers([("Content-Type", "a"), ("Connection", "x"), ("Host", "h")])
    assert kept == [["content-type", "a"]]


def test_the_near_site_wins_and_load_price_and_failures_count() -> None:
    near, far = _site("cn.sh", "31", 2.0), _site("cn.gz", "52", 30.0)
    assert [s.code for s, _c, _o in rank_sites([far, near], W)] == ["cn.sh", "cn.gz"]
    # A busy near site loses its compute score; a far idle one can win.
    busy = _site("cn.sh", "31", 2.0, in_flight=40)
    assert category_scores(busy, 1.0)[MetricCategory.COMPUTE] < 1.0
    assert rank_sites([busy, far], W)[0][0].code == "cn.gz"
    # Dearer costs score; every score is 0-10.
    dear = _site("cn.x", "31", 2.0, price_per_card_hour=4.0)
    cats = category_scores(dear, 1.0)
    assert cats[MetricCategory.COST] == 2.5
    assert all(0 <= v <= 10 for v in cats.values())
    # No healthy replica, or a failed forward lately: last, whatever the scores.
    empty = _site("cn.sh", "31", 1.0, healthy_replicas=0)
    down = _site("cn.sh", "31", 1.0, down=True)
    for loser in (empty, down):
        assert rank_sites([loser, far], W)[0][0].code == "cn.gz"


def test_two_choices_takes_the_less_loaded_of_two() -> None:
    load = {"a": 5, "b": 0, "c": 9}
    picks = {two_choices(["a", "b", "c"], load.__getitem__, random.Random(i)) for i in range(50)}
    assert "c" not in picks  # c loses to whichever other replica is drawn with it
    assert two_choices(["only"], load.get, random.Random(1)) == "only"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_needs_a_live_tunnel_and_fresh_reports_and_load_counts() -> None:
    clock = Clock()
    plane = MetricPlane(RoutingSettings(), "cn", "11", clock=clock)
    binding = ServiceBinding(name="s", replica=0, home_node="cn")
    plane.directory = Listed(
        {"s": [Placed("t1", binding, "gw", "cn"), Placed("t2", binding, None, "cn.sh", "31")]}
    )
    report = {"replicas": {"t1": {"healthy": True, "in_flight": 3, "requests": 10, "tokens": 0}}}
    plane.report("gw", report)
    assert not plane.healthy("t1")  # no tunnel
    plane.tunnels.conns["gw"] = TunnelConn("gw", ws=None)  # type: ignore[arg-type]
    assert plane.healthy("t1")
    clock.now += 2.0
    plane.report(
        "gw", {"replicas": {"t1": {"healthy": True, "in_flight": 1, "requests": 30, "tokens": 70}}}
    )
    load = plane.service_load("s")
    assert load.per_replica["t1"] == 1 and load.requests_per_s == 10.0
    assert load.tokens_per_s == 35.0
    clock.now += plane.settings.stale_s + 0.1
    assert not plane.healthy("t1")  # its reports stopped
    # A replica under another node: healthy while that node serves, sharing its forwards.
    assert plane.healthy("t2")
    plane.routed("cn.sh", 1)
    assert plane.service_load("s").per_replica["t2"] == 1
    plane.site_failed("cn.sh")
    assert not plane.healthy("t2")
    clock.now += plane.settings.site_down_s
    assert plane.healthy("t2")
    # The gateway's tunnel closing takes its replicas out at once.
    plane.report("gw", report)
    plane._tunnel_changed("gw", False)
    assert not plane.healthy("t1")


def test_a_forward_targets_url_is_looked_up_once_per_ttl_and_again_after_a_failure() -> None:
    now = [100.0]
    plane = MetricPlane(RoutingSettings(node_url_ttl_s=10.0), "cn", "11", clock=lambda: now[0])
    looked: list[str] = []

    def lookup(code: str) -> str:
        looked.append(code)
        return f"http://{code}.example:{len(looked)}"

    async def url() -> str:
        return await plane.node_url("cn.sh", lookup)

    assert asyncio.run(url()) == "http://cn.sh.example:1"
    now[0] += 9.0
    assert asyncio.run(url()) == "http://cn.sh.example:1"  # reused within the TTL
    now[0] += 2.0
    assert asyncio.run(url()) == "http://cn.sh.example:2"  # looked up again after it
    plane.site_failed("cn.sh")
    assert asyncio.run(url()) == "http://cn.sh.example:3"  # and after a failed forward
    assert looked == ["cn.sh"] * 3


def test_whether_a_service_is_known_is_read_once_per_ttl_for_known_and_unknown_names() -> None:
    now = [100.0]
    plane = MetricPlane(RoutingSettings(directory_ttl_s=0.5), "cn", "11", clock=lambda: now[0])
    reads: list[str] = []

    class Directory:
        def find(self, name: str) -> object | None:
            reads.append(name)
            return object() if name == "chat" else None

        def replicas(self, _name: str) -> list[object]:
            return []

    plane.directory = Directory()  # type: ignore[assignment]

    def known(name: str) -> bool:
        return asyncio.run(plane.known_async(name))

    # A client retrying a name that does not exist costs one read per period, not per request.
    assert [known("nope") for _ in range(5)] == [False] * 5
    assert known("chat") and known("chat")
    assert reads == ["nope", "chat"]
    now[0] += 0.6
    assert not known("nope") and known("chat")
    assert reads == ["nope", "chat", "nope", "chat"]
