"""The console's federation-wide endpoints, event stream, usage breakdown, CSP and the
gauges behind the alerting rules, against an in-process node with real gateways' protocol."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from computenet.node.api.console_live import Tickets
from computenet.node.console_cube import LiveCube, live_cube
from computenet.store.tables_billing import Budget
from nodeapi import World, running_world

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 4}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn", region="11") as w:
        yield w


def _remote(code: str, i: int, region: str, health: str = "healthy") -> dict[str, Any]:
    """A pool record as a child node's sync delta carries it."""
    cpi = f"{code}/p{i % 3}/pool{i}"
    spec = {
        "label": f"pool{i}",
        "cpu_cores": 8,
        "memory_mib": 1024,
        "machines": 2,
        "accelerator": A100 if i % 2 else None,
        "region": {"code": region},
        "price_per_card_hour": "7.5",
    }
    return {
        "cpi": cpi, "node": code, "provider": f"{code}/p{i % 3}", "health": health,
        "served_by_url": f"http://{code}.example", "spec": spec,
    }  # fmt: skip


def _fill_index(world: World) -> None:
    """Six healthy pools of cn.31 and four of cn.52, learned the way sync learns them."""
    index = world.rt.federation.index
    index.apply("cn.31", [_remote("cn.31", i, "31") for i in range(6)], full=False)
    index.apply("cn.52", [_remote("cn.52", 10 + i, "52") for i in range(4)], full=False)
    index.mark_unavailable("cn.52")  # Guizhou went silent


def _get(world: World, path: str, who: dict[str, str], **params: Any) -> Any:
    r = world.client.get(path, params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def test_federation_counters_pools_and_provinces_cover_the_index(world: World) -> None:
    world.gateway("own")  # one local pool, region 11 by default
    world.rt.federation.index.refresh_own()
    _fill_index(world)
    s = _get(world, "/api/v1/console/summary", world.admin)
    assert s["pools"] == 11 and s["nodes"] == 3
    assert s["pools_by_health"] == {"healthy": 7, "unhealthy": 0, "unavailable": 4}
    # 5 of the 10 remote pools carry 4 cards on each of 2 machines.
    assert s["cards"] == 5 * 8 and s["cpu_cores"] == 10 * 16 + 2
    sub = _get(world, "/api/v1/console/summary", world.admin, node="cn.31")
    assert sub["pools"] == 6 and sub["nodes"] == 1

    page = _get(world, "/api/v1/console/fed/pools", world.admin, page_size=4)
    assert page["total"] == 11 and len(page["pools"]) == 4 and page["next_page_token"]
    seen = [p["cpi"] for p in page["pools"]]
    while page["next_page_token"]:
        page = _get(
            world, "/api/v1/console/fed/pools", world.admin,
            page_size=4, page_token=page["next_page_token"],
        )  # fmt: skip
        seen += [p["cpi"] for p in page["pools"]]
    assert len(seen) == len(set(seen)) == 11
    only = _get(world, "/api/v1/console/fed/pools", world.admin, node="cn.52")
    assert only["total"] == 4 and {p["health"] for p in only["pools"]} == {"unavailable"}
    row = next(p for p in only["pools"] if p["accelerator"])
    assert row["cards"] == 8 and row["price_per_card_hour"] == "7.5"

    provinces = {p["code"]: p for p in _get(world, "/api/v1/console/fed/provinces", world.admin)}
    assert provinces["31"]["pools"] == 6 and provinces["31"]["healthy"] == 6
    assert provinces["52"]["pools"] == 4 and provinces["52"]["healthy"] == 0
    assert provinces["11"]["pools"] == 1 and provinces["65"]["pools"] == 0

    fed = _get(world, "/api/v1/console/fed/nodes", world.admin)
    nodes = {n["code"]: n for n in fed["nodes"]}
    assert nodes["cn"]["relation"] == "self" and nodes["cn.31"]["region"] == "31"
    assert {(li["parent"], li["child"]) for li in fed["links"]} == {
        ("cn", "cn.31"),
        ("cn", "cn.52"),
    }

    bad = world.client.get(
        "/api/v1/console/fed/pools", params={"node": "CN;drop"}, headers=world.admin
    )
    assert bad.status_code == 400 and "node" in bad.text


def test_summary_works_for_users_and_providers_and_scopes_their_tasks(world: World) -> None:
    alice = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    world.mint(role="user", subject="bob", tenant="acme")
    world.gateway("prov")
    world.submit(alice)
    world.submit(world.admin)
    provider = world.mint(role="provider", subject="cn/prov")["auth"]
    for who, queued in ((world.admin, 2), (alice, 1), (provider, None)):
        s = _get(world, "/api/v1/console/summary", who)
        counts = s["tasks_by_state"]
        if queued is not None:
            assert sum(counts.values()) == queued
        assert s["pools"] >= 0


def test_usage_breakdown_by_tenant_provider_and_model(world: World) -> None:
    alice = world.mint(role="user", subject="alice", tenant="acme")["auth"]
    gw = world.gateway("prov", price_per_core_hour="2", accelerator=A100)
    world.submit(alice, {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1}})
    lease = world.lease(gw)
    world.report(gw, lease, "RUNNING")
    usage = {"wall_s": "3600", "cpu_cores": 1, "memory_mib": 100, "cards": 0}
    world.report(gw, lease, "COMPLETE", usage=usage)
    plain = _get(world, "/api/v1/console/usage", world.admin)["points"]
    core_hours = sum(Decimal(p["cpu_core_hours"]) for p in plain)
    assert core_hours > 0
    for dim, key in (("tenant", "acme"), ("provider", "cn/prov"), ("accelerator", "CPU only")):
        b = _get(world, "/api/v1/console/usage/by", world.admin, dim=dim, bucket_s=3600)
        assert b["dim"] == dim and len(b["starts"]) in (168, 169)
        (g,) = b["groups"]
        assert g["key"] == key and len(g["cost"]) == len(b["starts"])
        assert sum(Decimal(x) for x in g["cpu_core_hours"]) == core_hours
        assert sum(Decimal(x) for x in g["cost"]) > 0 and sum(g["tasks"]) == 1
    # By node: the pool is this node's (cn); none of it ran below cn.31.
    assert len(_get(world, "/api/v1/console/usage/by", world.admin, node="cn")["groups"]) == 1
    assert _get(world, "/api/v1/console/usage/by", world.admin, node="cn.31")["groups"] == []
    # Alice sees her own; another user of the same tenant sees nothing of hers.
    carol = world.mint(role="user", subject="carol", tenant="other")["auth"]
    assert _get(world, "/api/v1/console/usage/by", carol)["groups"] == []
    assert len(_get(world, "/api/v1/console/usage/by", alice)["groups"]) == 1


def test_event_stream_needs_a_ticket_or_token_and_sends_an_update(world: World) -> None:
    r = world.client.get("/api/v1/console/events", params={"ticket": "nope"})
    assert r.status_code == 401 and "ticket" in r.json()["message"]
    assert world.client.get("/api/v1/console/events").status_code == 401
    t = world.client.post("/api/v1/console/events/ticket", headers=world.admin).json()
    with world.client.stream("GET", "/api/v1/console/events", params={"ticket": t["ticket"]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        event = data = None
        for _ in range(20):  # bounded: the first update comes right after the retry hint
            line = next(lines)
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                break
    assert event == "update" and data is not None
    assert set(data) >= {"pools_seq", "pools", "tasks_by_state", "tasks_version"}
    again = world.client.get("/api/v1/console/events", params={"ticket": t["ticket"]})
    assert again.status_code == 401  # single use
    # A read-only provider token may open a stream; a gateway's may not.
    gw = world.gateway("prov")
    provider = world.mint(role="provider", subject="cn/prov")["auth"]
    assert world.client.post("/api/v1/console/events/ticket", headers=provider).status_code == 200
    assert world.client.post("/api/v1/console/events/ticket", headers=gw).status_code == 403


def test_tickets_expire_on_the_injected_clock() -> None:
    now = [100.0]
    tickets = Tickets(clock=lambda: now[0])
    from computenet.node.auth import Principal

    p = Principal("id", "user", "alice", "acme", frozenset())
    fresh, stale = tickets.issue(p), tickets.issue(p)
    assert tickets.redeem(fresh) is p
    now[0] += 61
    with pytest.raises(Exception, match="expired"):
        tickets.redeem(stale)


def test_console_files_carry_a_content_security_policy(world: World) -> None:
    for path in ("/console/", "/console/app.js", "/console/vendor/echarts-6.1.0.min.js"):
        r = world.client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    html = world.client.get("/console/").text
    assert "<script>" not in html and "onclick" not in html
    assert "Content-Security-Policy" not in world.client.get("/healthz").headers


def test_alert_gauges_are_exported(world: World) -> None:
    now = datetime.now(UTC)
    with world.rt.db.write() as s:
        s.add(
            Budget(
                tenant="acme", currency="CNY", monthly_limit=Decimal(100),
                warn_fraction=Decimal("0.8"), period=now.strftime("%Y-%m"),
                spent=Decimal(90), updated_at=now,
            )
        )  # fmt: skip
    text = world.client.get("/metrics").text
    assert 'computenet_budget_spent_ratio{tenant="acme"} 0.9' in text
    assert 'computenet_budget_warn_ratio{tenant="acme"} 0.8' in text
    for family in (
        "computenet_queue_wait_over_estimate_ratio",
        "computenet_federation_child_silent",
    ):
        assert f"# TYPE {family} gauge" in text


def test_the_sums_follow_the_index_as_it_changes(world: World) -> None:
    index = world.rt.federation.index
    cube = live_cube(world.rt.db, index)
    assert cube.current().cells == {}
    _fill_index(world)
    c = cube.current()
    assert sum(x.pools for x in c.cells.values()) == 10
    assert c.cells[("cn.52", "52", "unavailable")].pools == 4
    assert c.cells[("cn.31", "31", "healthy")].cards == 3 * 8  # 3 of 6 with 4 cards x 2
    assert set(c.providers["cn.31"]) == {"cn.31/p0", "cn.31/p1", "cn.31/p2"}
    # A pool moves province and one is dropped (a full delta without it): only they move.
    moved = _remote("cn.31", 0, "44")
    index.apply("cn.31", [moved] + [_remote("cn.31", i, "31") for i in range(1, 5)], full=True)
    c = cube.current()
    assert c.cells[("cn.31", "44", "healthy")].pools == 1
    assert c.cells[("cn.31", "31", "healthy")].pools == 4
    assert sum(x.pools for x in c.cells.values()) == 9
    # The same sums as a fresh read of the whole index.
    fresh = LiveCube(world.rt.db, index).current()
    assert fresh.cells == c.cells and fresh.providers == c.providers
