"""Forwarding between nodes, for real: a national node and a regional child served on
loopback, each with its own metric plane; the child's gateway tunnel reaches a replica."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from computenet.gateway.tunnel import ReplicaTarget
from computenet.model.service import ServiceBinding, key_hash
from computenet.node.routing.forward import FORWARD_HEADER
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from nodeproc import free_port
from svcserve import Listed, Placed, _UnixHTTPServer, replica, run_tunnel, serve_node
from svcserve import wait_until as until

KEY = "sk-forward"
OK = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Pair:
    national: str
    child: str
    child_code: str
    nat_rt: NodeRuntime
    child_rt: NodeRuntime
    nat_list: Listed
    child_list: Listed
    nat_admin: dict[str, str]
    server: _UnixHTTPServer


def _binding() -> ServiceBinding:
    return ServiceBinding(name="echo", replica=0, key_hashes=[key_hash(KEY)], home_node="cn")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with ExitStack() as stack:
        nport, cport = free_port(), free_port()
        nat = NodeRuntime(
            NodeSettings(
                data_dir=tmp_path / "n",
                node_code="cn",
                region="11",
                public_url=f"http://127.0.0.1:{nport}",
            )
        )
        admin = {"Authorization": f"Bearer {nat.bootstrap().admin_token}"}
        nat_url = stack.enter_context(serve_node(nat, nport))
        tok = httpx.post(
            f"{nat_url}/federation/v1/tokens",
            json={"label": "sh", "level": "regional"},
            headers=admin,
        ).json()["enrol_token"]
        child = NodeRuntime(
            NodeSettings(
                data_dir=tmp_path / "c",
                level="regional",
                region="31",
                public_url=f"http://127.0.0.1:{cport}",
                parent_url=nat_url,
                enrol_token=tok,
            )
        )
        cadmin = {"Authorization": f"Bearer {child.bootstrap().admin_token}"}
        child_url = stack.enter_context(serve_node(child, cport))
        lists = Listed(), Listed()
        nat.metric_plane.directory, child.metric_plane.directory = lists
        for rt in (nat, child):
            rt.metric_plane.settings.directory_ttl_s = 0.0
        code = child.node_code
        r = httpx.post(f"{child_url}/api/v1/providers", json={"label": "p"}, headers=cadmin)
        enrol = {"token": r.json()["enrolment_token"], "name": "gw"}
        gw = httpx.post(f"{child_url}/gateway/v1/enrol", json=enrol).json()
        sock = tmp_path / "r.sock"
        server = stack.enter_context(replica(sock, "sh-replica"))
        stack.enter_context(
            run_tunnel(child_url, gw["credential"], lambda: {"t1": ReplicaTarget(sock)})
        )
        lists[1].placed["echo"] = [Placed("t1", _binding(), gw["gateway_id"], code, "31")]
        lists[0].placed["echo"] = [Placed("t1", _binding(), None, code, "31")]
        until("a healthy replica", lambda: child.metric_plane.healthy("t1"))
        yield Pair(nat_url, child_url, code, nat, child, *lists, admin, server)


def test_a_node_without_a_local_replica_forwards_to_the_node_that_has_one(pair: Pair) -> None:
    r = httpx.post(f"{pair.national}/services/v1/echo/v1/x?y=1", content=b"hi", headers=OK)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["replica"] == "sh-replica" and got["path"] == "/v1/x?y=1" and got["body"] == "hi"
    assert "authorization" not in got["headers"] and FORWARD_HEADER not in got["headers"]
    assert httpx.get(f"{pair.national}/services/v1/echo/x").status_code == 401


def test_a_node_that_knows_no_replica_asks_its_parent_and_nothing_loops(pair: Pair) -> None:
    # The child knows nothing of "other" and asks its parent; the parent knows it only on the
    # child, which the request already went through: a clear 503 rather than a loop.
    pair.child_list.placed["other"] = []
    pair.nat_list.placed["other"] = pair.nat_list.placed["echo"]
    r = httpx.get(f"{pair.child}/services/v1/other/x", headers=OK)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "no-replica"


def test_a_forward_header_is_checked(pair: Pair) -> None:
    # A forged or replayed header is refused, so it cannot skip the key check.
    r = httpx.get(f"{pair.child}/services/v1/echo/x", headers={FORWARD_HEADER: "bm9wZQ=="})
    assert r.status_code == 401
    seen: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        seen.append(request)

    # Capture a real forward the national node sends, then replay it.
    http = pair.nat_rt.metric_plane.http_client()
    http.event_hooks["request"].append(keep)
    assert httpx.get(f"{pair.national}/services/v1/echo/x", headers=OK).status_code == 200
    header = seen[-1].headers[FORWARD_HEADER]
    r = httpx.get(f"{pair.child}/services/v1/echo/x", headers={FORWARD_HEADER: header})
    assert r.status_code == 401 and r.json()["error"] == "replayed"
    # Signed for another request (path), it is refused too.
    r = httpx.get(f"{pair.child}/services/v1/echo/y", headers={FORWARD_HEADER: header})
    assert r.status_code == 401


def test_a_dead_child_replica_is_failed_over_by_the_parent(pair: Pair) -> None:
    pair.child_list.placed["echo"] = []  # the child lost its replica
    r = httpx.get(f"{pair.national}/services/v1/echo/x", headers=OK)
    assert r.status_code == 503
    assert not pair.nat_rt.metric_plane.site_up(pair.child_code)  # passed over for a while


def test_the_parent_sees_the_childs_replica_health_through_sync(pair: Pair) -> None:
    plane = pair.nat_rt.metric_plane

    def site() -> dict[str, Any]:
        r = httpx.get(f"{pair.national}/api/v1/services/echo/metrics", headers=pair.nat_admin)
        [only] = r.json()["sites"]
        return dict(only)

    # The child's word arrives with its sync deltas (every fed_sync_s), so it is never older
    # than the metric plane's stale_s while the child syncs.
    until("the child's report", lambda: site()["health_age_s"] is not None)
    assert site()["healthy_replicas"] == 1
    assert site()["health_age_s"] <= plane.settings.stale_s
    assert httpx.get(f"{pair.national}/services/v1/echo/x", headers=OK).status_code == 200
    pair.server.healthy = False  # its health checks fail: the child marks it, then the parent
    until("the parent to learn", lambda: site()["healthy_replicas"] == 0, timeout_s=15)
    r = httpx.get(f"{pair.national}/api/v1/services/echo/metrics", headers=pair.nat_admin)
    assert [x["healthy"] for x in r.json()["replicas"]] == [False]
    # The parent skips the child without trying it: no failed forward marked the site down.
    r = httpx.get(f"{pair.national}/services/v1/echo/x", headers=OK)
    assert r.status_code == 503 and r.json()["error"] == "no-replica"
    assert plane.site_up(pair.child_code)
    pair.server.healthy = True
    until("the parent to see it back", lambda: site()["healthy_replicas"] == 1, timeout_s=15)
    assert httpx.get(f"{pair.national}/services/v1/echo/x", headers=OK).status_code == 200
