"""End to end in Chromium: the console against a real node with a local gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from chromium import chromium_path
from console_flow import run_flow
from nodeproc import Proc, admin_token, free_port, start_gateway, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str]]:
    """``computenet up`` (Beijing) plus two providers' gateways in Shanghai and Guangdong."""
    base = tmp_path_factory.mktemp("console")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_node(base / "node", port, "--cpus", "2", up=True)
    gateways: list[Proc] = []
    try:
        token = admin_token(proc)
        for label, region, price in (("sh-dc", "31", "0.12"), ("gz-dc", "44", "0.08")):
            extra = ("--region", region, "--price-per-core-hour", price)
            gateways.append(start_gateway(url, token, base / label, label, 1, *extra))
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pools = httpx.get(f"{url}/api/v1/pools", headers=auth).json()
            if sum(p["health"] == "healthy" for p in pools) == 3:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("the three pools did not all turn healthy")
        yield proc, url
    finally:
        for gw in gateways:
            gw.stop()
        proc.stop()


def test_login_pools_submit_watch_and_read_log(node: tuple[Proc, str]) -> None:
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    proc, url = node
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            task_id = run_flow(page, url, admin_token(proc), 3)
        finally:
            browser.close()
    assert task_id.startswith("cn-")
