"""Monitoring against real processes: /metrics moves with tasks, trace ids, readiness, and a
pool whose gateway dies turns unhealthy within the node's timeout while its availability drops."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeproc import Proc, admin_token, free_port, start_gateway, start_node
from polling import wait_for

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value from the Prometheus text format."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    base = tmp_path_factory.mktemp("metrics")
    port = free_port()
    proc = start_node(base / "node", port, "--cpus", "2", up=True)
    try:
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {admin_token(proc)}"}
    finally:
        proc.stop()


def test_metrics_names_and_task_counters_move(up: tuple[str, dict[str, str]]) -> None:
    url, auth = up
    before = scrape(url)
    for name in (
        "computenet_tasks_submitted_total",
        "computenet_tasks_placed_total",
        "computenet_lease_renewals_total",
        "computenet_gateway_heartbeats_total",
        "computenet_placement_pass_seconds_count",
        "computenet_queue_wait_seconds_count",
        'computenet_tasks{state="COMPLETE"}',
        'computenet_pools{health="healthy"}',
    ):
        assert name in before, name
    text = httpx.get(f"{url}/metrics").text
    for family in ("computenet_sync_lag_seconds", "computenet_errors_total"):
        assert f"# TYPE {family.removesuffix('_total')}" in text
    ids = []
    for i in range(3):
        r = httpx.post(
            f"{url}/api/v1/tasks",
            json={"name": f"m{i}", "executors": [{"command": ["echo", f"metrics-{i}"]}]},
            headers=auth,
        )
        assert r.status_code == 201
        ids.append(r.json()["id"])

    def all_done() -> bool:
        states = [httpx.get(f"{url}/api/v1/tasks/{t}", headers=auth).json()["state"] for t in ids]
        return all(s == "COMPLETE" for s in states)

    wait_for(all_done, 60, "three tasks to complete")
    # The counter moves just after the report is committed, so a reader may see COMPLETE first.
    finished = 'computenet_tasks_finished_total{state="COMPLETE"}'
    after = wait_for(
        lambda: (m := scrape(url)).get(finished, 0) >= 3 and m, 10, "the finished counter"
    )
    assert (
        after["computenet_tasks_submitted_total"] - before["computenet_tasks_submitted_total"] == 3
    )
    key = 'computenet_tasks{state="COMPLETE"}'
    assert after[key] - before[key] == 3
    assert after["computenet_queue_wait_seconds_count"] >= 3
    assert after["computenet_tasks_placed_total"] >= 3
    assert after["computenet_http_requests_total" + '{status="2xx"}'] > 0


def test_trace_id_comes_from_traceparent_and_health_endpoints(
    up: tuple[str, dict[str, str]],
) -> None:
    url, auth = up
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = httpx.post(
        f"{url}/api/v1/tasks",
        json={"executors": [{"command": ["true"]}]},
        headers={**auth, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    assert r.headers["x-request-id"] == trace
    r = httpx.get(f"{url}/api/v1/node", headers={**auth, "X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    assert len(httpx.get(f"{url}/healthz").headers["x-request-id"]) == 32  # generated
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"


def _pool(url: str, auth: dict[str, str]) -> dict[str, Any]:
    pools = httpx.get(f"{url}/api/v1/pools", headers=auth).json()
    return pools[0] if pools else {}


def test_dead_gateway_turns_pool_unhealthy_within_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, gw_metrics = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    timeout_s = 8.0  # above the gateway's 5 s heartbeat interval
    node = start_node(
        tmp_path / "node",
        port,
        "--heartbeat-timeout-s",
        str(timeout_s),
        "--quality-sample-s",
        "0.5",
        "--region",
        "11",
    )
    gw: Proc | None = None
    try:
        auth = {"Authorization": f"Bearer {admin_token(node)}"}
        monkeypatch.setenv("COMPUTENET_LOG_FORMAT", "json")  # the gateway's logs
        gw = start_gateway(
            url,
            auth["Authorization"][7:],
            tmp_path / "gw",
            "acme",
            1,
            "--region",
            "31",
            "--metrics-port",
            str(gw_metrics),
        )
        wait_for(lambda: _pool(url, auth).get("health") == "healthy", 30, "a healthy pool")

        def console_pool() -> dict[str, Any]:
            page = httpx.get(f"{url}/api/v1/console/pools", headers=auth).json()
            return page["pools"][0]  # type: ignore[no-any-return]

        wait_for(lambda: console_pool()["quality"]["samples"] >= 4, 10, "quality samples")
        assert console_pool()["quality"]["availability"] == 1.0
        latency = httpx.get(f"{url}/api/v1/console/latency", headers=auth).json()
        assert [(e["from_region"], e["to_region"]) for e in latency] == [("31", "11")]
        assert latency[0]["rtt_ms"] > 0

        # The submitter's trace id reaches the gateway's JSON log with the lease.
        trace = "0af7651916cd43dd8448eb211c80319c"
        r = httpx.post(
            f"{url}/api/v1/tasks",
            json={"executors": [{"command": ["echo", "traced"]}]},
            headers={**auth, "traceparent": f"00-{trace}-b7ad6b7169203331-01"},
        )
        tid = r.json()["id"]
        wait_for(
            lambda: (
                httpx.get(f"{url}/api/v1/tasks/{tid}", headers=auth).json()["state"] == "COMPLETE"
            ),
            30,
            "the traced task",
        )
        lines = [json.loads(x) for x in gw.output().splitlines() if x.startswith("{")]
        assert any(x.get("trace_id") == trace and tid in x["msg"] for x in lines), lines
        done = 'computenet_gateway_tasks_finished_total{state="COMPLETE"}'
        gm = wait_for(
            lambda: (x := scrape(f"http://127.0.0.1:{gw_metrics}")).get(done, 0) >= 1 and x,
            10,
            "the gateway's finished counter",
        )
        assert gm["computenet_gateway_heartbeats_sent_total"] >= 1
        assert gm["computenet_gateway_tasks_leased_total"] >= 1
        assert gm["computenet_gateway_node_rtt_ms"] > 0

        gw.kill9()
        killed = time.monotonic()
        wait_for(
            lambda: _pool(url, auth).get("health") == "unhealthy",
            timeout_s + 5,
            "the pool to turn unhealthy in /api/v1",
        )
        took = time.monotonic() - killed
        # The last heartbeat came before the kill; the housekeeping pass that marks the pool
        # runs every second (plus slack for a loaded machine).
        assert took <= timeout_s + 3, took
        row = console_pool()
        assert row["health"] == "unhealthy"
        avail = wait_for(
            lambda: (a := console_pool()["quality"]["availability"]) < 1.0 and a,
            5,
            "availability to drop",
        )
        assert 0 < avail < 1
    finally:
        if gw is not None:
            gw.stop()
        node.stop()


def test_up_serves_its_gateways_metrics_when_asked(tmp_path: Path) -> None:
    port, gw_metrics = free_port(), free_port()
    proc = start_node(
        tmp_path / "node", port, "--cpus", "1", "--gateway-metrics-port", str(gw_metrics), up=True
    )
    try:
        found = wait_for(
            lambda: scrape(f"http://127.0.0.1:{gw_metrics}").get("computenet_gateway_node_rtt_ms"),
            30,
            "the local gateway's RTT to the node",
        )
        assert found > 0
        assert "computenet_tasks_submitted_total" in scrape(f"http://127.0.0.1:{port}")
    finally:
        proc.stop()
