"""The console's main flow in a real browser: log in, see the pools, submit a task, watch it
finish, read its log. (Screenshots come from tests/console/test_console_pages.py.)"""

from __future__ import annotations

from playwright.sync_api import Page, expect

TIMEOUT_MS = 60_000


def run_flow(page: Page, url: str, token: str, regions: int) -> str:
    """Drive the console; return the finished task's id. ``regions`` is how many provinces
    have pools."""

    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(f"{url}/console")
    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#login .error")).to_contain_text("refused")
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    expect(page.locator("#tree")).to_contain_text("cn/")
    expect(page.locator("#tree")).to_contain_text("(this node)")
    expect(page.locator('[data-chart="map"] canvas').first).to_be_visible()
    shaded = page.evaluate(
        """() => echarts.getInstanceByDom(document.querySelector('[data-chart="map"]'))
            .getOption().series[0].data.filter((d) => d.value > 0).length"""
    )
    assert shaded == regions

    page.click("nav >> text=Pools")
    row = page.locator("#pools tr[data-cpi]").first
    expect(row).to_contain_text("healthy")

    page.click("nav >> text=Submit")
    page.fill("#f-name", "from-the-browser")
    page.fill("#f-command", "echo hello-from-the-console; echo second line")
    page.click("#submit-task")
    expect(page.locator("#task-state")).to_contain_text("COMPLETE")
    expect(page.locator("pre.stdout")).to_contain_text("hello-from-the-console")
    expect(page.locator("#timeline")).to_contain_text("placed on")
    task_id = page.url.rsplit("/", 1)[1]

    page.click("nav >> text=Tasks")
    expect(page.locator("#tasks")).to_contain_text("from-the-browser")
    page.select_option("#state", "COMPLETE")
    expect(page.locator("#tasks")).to_contain_text(task_id)

    page.click("nav >> text=Usage")
    expect(page.locator('[data-chart="usage-cost"] canvas').first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Advance reservations")
    page.click("nav >> text=Network")
    expect(page.locator("#provider-quality")).to_contain_text("cn/")
    return task_id
