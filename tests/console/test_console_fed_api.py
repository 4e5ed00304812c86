"""The console's federation-wide endpoints, event stream, usage breakdown, CSP and the
gauges behind the alerting rules, against an in-process node with real gateways' protocol."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from computenet.node.api.console_fed import IndexMemo
from computenet.node.api.console_live import Tickets
from computenet.store.tables_billing import Budget
from computenet.store.tables_federation import FedPool
from nodeapi import World, running_world
from polling import wait_for

A100 = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 4}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path, "cn", region="11") as w:
        yield w


def _remote(code: str, i: int, region: str, health: str = "healthy") -> dict[str, Any]:
    """An index row as a child node's sync would store it."""
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
    rec = {"cpi": cpi, "node": code, "provider": f"{code}/p{i % 3}", "spec": spec}
    return {
        "cpi": cpi,
        "owner": code,
        "via": code,
        "url": f"http://{code}.example",
        "record": rec,
        "health": health,
        "seq": 1000 + i,
        "updated_at": datetime.now(UTC),
    }


def _fill_index(world: World) -> None:
    rows = [_remote("cn.31", i, "31") for i in range(6)]
    rows += [_remote("cn.52", 10 + i, "52", "unavailable") for i in range(4)]
    with world.rt.db.write() as s:
        s.execute(insert(FedPool), rows)


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


def test_memo_recomputes_on_change_and_serves_recent_values_meanwhile(world: World) -> None:
    now = [0.0]
    memo = IndexMemo(clock=lambda: now[0])
    release = threading.Event()
    calls: list[int] = []

    def compute(value: int, wait: bool = False) -> Any:
        def run() -> int:
            calls.append(value)
            if wait:
                assert release.wait(10)
            return value

        return run

    db = world.rt.db
    assert memo.get(db, "v", None, compute(1)) == 1
    assert memo.get(db, "v", None, compute(2)) == 1 and calls == [1]  # index unchanged
    _fill_index(world)  # the index changed: recompute in the background, serve 1 meanwhile
    assert memo.get(db, "v", None, compute(3, wait=True)) == 1
    assert memo.get(db, "v", None, compute(4)) == 1  # one recomputation at a time
    release.set()
    wait_for(lambda: memo.get(db, "v", None, compute(5)) == 3, 10, "the new value")
    assert calls == [1, 3]
    # Past MAX_STALE_S a caller waits for the new value rather than see an old one.
    with db.write() as s:
        s.execute(insert(FedPool), [_remote("cn.61", 99, "61")])
    now[0] += IndexMemo.MAX_STALE_S + 1
    assert memo.get(db, "v", None, compute(6)) == 6
