"""Every console page in real Chromium, as an admin, a user and a provider operator, at
1366x768 and 1920x1080, against a three-node federation (national in Beijing, regional
nodes in Shanghai and Guizhou, each with a gateway): no console errors, no 5xx, and the map
and charts drawn (an ECharts instance with series, and a canvas with pixels on it).

With ``COMPUTENET_SCREENSHOTS=DIR`` (``make screenshots``) it saves each page as the admin.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chromium import chromium_path
from fedproc import Member, start_member, stop_all, wait_for
from nodeproc import start_gateway

TIMEOUT_MS = 60_000
VIEWPORTS = ({"width": 1366, "height": 768}, {"width": 1920, "height": 1080})
# Each page, what shows it has loaded, and which charts it must draw.
USAGE = ["usage-cost", "usage-card_hours", "usage-cpu_core_hours", "usage-tasks"]
PAGES: list[tuple[str, str, list[str]]] = [
    ("overview", "#tree", ["map", "health"]),
    ("pools", "#pools tr[data-cpi]", []),
    ("tasks", "#tasks tr a", []),
    ("task", "pre.stdout", []),
    ("usage", "#reservations, main p.muted", USAGE),
    ("network", "#provider-quality", ["latency"]),
    ("submit", "#submit-form", []),
]


@dataclass
class Fed:
    national: Member
    tokens: dict[str, str]  # role -> token
    task_ids: dict[str, str]  # role -> a task it may see


def _api(m: Member, token: str, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(
        method, f"{m.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )  # fmt: skip
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    base = tmp_path_factory.mktemp("console-pages")
    members: dict[str, Member] = {}
    extra = []
    try:
        nat = members["national"] = start_member(
            base, "national", None, "", "national", "11", price_per_core_hour="0.2"
        )
        members["shanghai"] = start_member(base, "shanghai", nat, "31", "regional", "31")
        members["guizhou"] = start_member(base, "guizhou", nat, "52", "regional", "52")
        extra.append(
            start_gateway(nat.url, nat.token, base / "gd-gw", "gd-dc", 1, "--region", "44")
        )
        # Every node's pools reach the national index and both children have measured
        # their round trip to it (a child pings its parent every 10 s).
        wait_for(
            "the 4 nodes' pools in the national index",
            lambda: nat.get("/api/v1/console/summary")["pools"] >= 4,
        )
        wait_for(
            "both links measured",
            lambda: all(
                link["rtt_ms"] is not None for link in nat.get("/api/v1/console/fed/nodes")["links"]
            ) and len(nat.get("/api/v1/console/fed/nodes")["links"]) == 2,
        )  # fmt: skip
        prefix = next(
            p["prefix"]
            for p in nat.get("/api/v1/console/tree")["providers"]
            if p["prefix"].endswith("/national")
        )
        user = _api(
            nat,
            nat.token,
            "POST",
            "/api/v1/tokens",
            {"role": "user", "subject": "alice", "tenant": "acme"},
        )["token"]
        provider = _api(
            nat, nat.token, "POST", "/api/v1/tokens", {"role": "provider", "subject": prefix}
        )["token"]
        spec = {
            "name": "console-demo",
            "executors": [{"command": ["sh", "-c", "echo to-stdout; echo to-stderr >&2; sleep 1"]}],
            "resources": {"cpu_cores": 1},
            "placement": {"regions": ["11"]},
        }
        ids = {
            "user": _api(nat, user, "POST", "/api/v1/tasks", spec)["id"],
            "admin": _api(nat, nat.token, "POST", "/api/v1/tasks", spec)["id"],
        }
        for tid in ids.values():
            wait_for(
                f"{tid} complete",
                lambda tid=tid: (
                    _api(nat, nat.token, "GET", f"/api/v1/tasks/{tid}")["state"] == "COMPLETE"
                ),
            )
        ids["provider"] = ids["admin"]  # ran on the provider's pool: it may see it
        yield Fed(nat, {"admin": nat.token, "user": user, "provider": provider}, ids)
    finally:
        for gw in extra:
            gw.stop()
        stop_all(members)


def _charts_drawn(page: Any, names: list[str]) -> dict[str, Any]:
    """For each named chart: its series count and whether its canvas has any pixel drawn."""
    result: dict[str, Any] = page.evaluate(
        """(names) => Object.fromEntries(names.map((n) => {
            const el = document.querySelector(`[data-chart="${n}"]`);
            const c = el && echarts.getInstanceByDom(el);
            if (!c) return [n, null];
            let inked = 0;  // sampled pixels with any ink, over every layer's canvas
            for (const cv of el.querySelectorAll("canvas")) {
              const px = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
              for (let i = 3; i < px.length; i += 4 * 97) if (px[i] > 0) inked++;
            }
            return [n, { series: c.getOption().series.length, inked }];
        }))""",
        names,
    )
    return result


@pytest.mark.parametrize("role", ["admin", "user", "provider"])
def test_every_page_for_every_role_and_screen(fed: Fed, role: str) -> None:
    exe = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    shots = os.environ.get("COMPUTENET_SCREENSHOTS")
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            for viewport in VIEWPORTS:
                page = browser.new_page(viewport=viewport)
                page.set_default_timeout(TIMEOUT_MS)
                expect.set_options(timeout=TIMEOUT_MS)
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type == "error"
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e} {e.stack}"))
                page.on(
                    "response",
                    lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500 else None,
                )
                page.goto(f"{fed.national.url}/console/")
                expect(page.locator("#token")).to_be_visible()
                assert not page.locator("#logout").is_visible(), "Log out shown before login"
                page.fill("#token", fed.tokens[role])
                page.click("#login button[type=submit]")
                expect(page.locator("#logout")).to_be_visible()
                for name, ready, charts in PAGES:
                    hash_ = f"#/task/{fed.task_ids[role]}" if name == "task" else f"#/{name}"
                    page.goto(f"{fed.national.url}/console/{hash_}")
                    expect(page.locator(ready).first).to_be_visible()
                    if name == "task":
                        expect(page.locator("pre.stdout")).to_contain_text("to-stdout")
                        expect(page.locator("pre.stderr")).to_contain_text("to-stderr")
                        expect(page.locator(".stream-label")).to_have_text(["stdout", "stderr"])
                    for chart in charts:
                        expect(page.locator(f'[data-chart="{chart}"] canvas').first).to_be_visible()
                    deadline = time.monotonic() + 10  # ECharts animates in: until inked
                    drawn = _charts_drawn(page, charts)
                    while time.monotonic() < deadline and not all(
                        d and d["inked"] for d in drawn.values()
                    ):
                        page.wait_for_timeout(200)
                        drawn = _charts_drawn(page, charts)
                    for chart, d in drawn.items():
                        assert d and d["series"] >= 1 and d["inked"] > 0, (role, viewport, chart, d)
                    if name == "overview":
                        expect(page.locator("#counters")).to_contain_text("pools healthy")
                        # A live update may redraw the map: ask until a drawn one answers.
                        series_sizes = """() => {
                            const el = document.querySelector('[data-chart="map"]');
                            const c = el && echarts.getInstanceByDom(el);
                            return c ? c.getOption().series.map((s) => (s.data || []).length)
                                     : null;
                        }"""
                        deadline = time.monotonic() + 10
                        n = page.evaluate(series_sizes)
                        while n != [34, 2, 3] and time.monotonic() < deadline:
                            page.wait_for_timeout(200)
                            n = page.evaluate(series_sizes)
                        provinces = fed.national.get("/api/v1/console/fed/provinces")
                        assert n == [34, 2, 3], (n, provinces)
                    if name == "pools":
                        expect(page.locator("#pool-total")).to_contain_text("pools match")
                    if shots and role == "admin":
                        suffix = "" if viewport["width"] == 1366 else "-1920"
                        page.wait_for_timeout(800)  # let the charts' short animations end
                        page.screenshot(
                            path=str(Path(shots) / f"{name}{suffix}.png"), full_page=True
                        )
                page.close()
        finally:
            browser.close()
    assert problems == []
