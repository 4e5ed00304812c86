"""End to end in Chromium: the console against a real node with a local gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chromium import chromium_path
from console_flow import run_flow
from nodeproc import Proc, admin_token, free_port, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str]]:
    base = tmp_path_factory.mktemp("console")
    port = free_port()
    proc = start_node(base / "node", port, "--cpus", "2", up=True)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_login_pools_submit_watch_and_read_log(node: tuple[Proc, str]) -> None:
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    proc, url = node
    shots = os.environ.get("COMPUTENET_SCREENSHOTS")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            task_id = run_flow(page, url, admin_token(proc), Path(shots) if shots else None)
        finally:
            browser.close()
    assert task_id.startswith("cn-")
