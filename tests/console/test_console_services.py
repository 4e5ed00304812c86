"""The console's Services page in Chromium against a real node and gateway running a real
replica: the replica on the map, in the traffic split and in the table, and the latency the
router observed for requests sent through it (issue 18)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from chromium import chromium_path
from nodeproc import Proc, admin_token, free_port, start_node

pytestmark = pytest.mark.slow
SERVICE = {
    "name": "files",
    "executor": {"command": ["sh", "-c", 'exec python3 -m http.server "$PORT" --bind 127.0.0.1']},
    "resources": {"cpu_cores": 1, "ram_gb": 0.5},
    "health": {"path": "/"},  # http.server has no /health
}


@pytest.fixture
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, dict[str, str]]]:
    base = tmp_path_factory.mktemp("console-services")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_node(base / "node", port, "--cpus", "2", "--region", "31", up=True)
    auth = {"Authorization": f"Bearer {admin_token(proc)}"}
    try:
        yield proc, url, auth
    finally:
        # Stop the replica (its runner would outlive the gateway), then the node.
        httpx.delete(f"{url}/api/v1/services/files", headers=auth)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/api/v1/services/files", headers=auth).status_code == 404:
                break
            time.sleep(0.3)
        proc.stop()


def test_services_page_shows_replicas_on_the_map(node: tuple[Proc, str, dict[str, str]]) -> None:
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    _proc, url, auth = node
    r = httpx.post(f"{url}/api/v1/services", json=SERVICE, headers=auth)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(f"{url}/api/v1/services/files", headers=auth).json()
        if any(x["state"] == "RUNNING" for x in status.get("replicas", [])):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    # Requests through the node's router, so the latency chart has points to draw.
    key = {"Authorization": f"Bearer {r.json()['key']}"}
    served, deadline = 0, time.monotonic() + 30
    while served < 20:  # 503 until its first health check passes
        code = httpx.get(f"{url}/services/v1/files/", headers=key).status_code
        assert code in (200, 503) and time.monotonic() < deadline, code
        served += code == 200
        time.sleep(0 if code == 200 else 0.2)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(f"{url}/console")
            page.fill("#token", auth["Authorization"].split()[1])
            page.click("#login button[type=submit]")
            page.click("nav >> text=Services")
            table = page.locator('table.replicas[data-service="files"]')
            expect(table).to_contain_text("RUNNING")
            expect(table).to_contain_text("Shanghai (31)")
            expect(page.locator("section[data-service=files]")).to_contain_text("1/1 replicas")
            expect(page.locator('[data-chart="service-map-files"] canvas').first).to_be_visible()
            points = page.evaluate(
                """() => echarts.getInstanceByDom(
                    document.querySelector('[data-chart="service-map-files"]'))
                    .getOption().series[0].data.length"""
            )
            assert points == 1
            expect(page.locator('[data-chart="service-split-files"] canvas').first).to_be_visible()
            latency = page.locator('[data-chart="service-latency-files"] canvas').first
            expect(latency).to_be_visible()
            drawn = page.evaluate(
                """() => echarts.getInstanceByDom(
                    document.querySelector('[data-chart="service-latency-files"]'))
                    .getOption().series.map((s) => [s.name, s.data.length,
                        s.data.reduce((n, p) => n + p[2], 0)])"""
            )
            # One site and its one replica, each with a p50 and a p95 line over the 20 requests.
            assert len(drawn) == 4, drawn
            assert all(points >= 1 and requests == 20 for _, points, requests in drawn), drawn
        finally:
            browser.close()
