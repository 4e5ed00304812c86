"""The console's main flow in a real browser, shared by the end-to-end test and the
screenshot script: log in, see the pools, submit a task, watch it finish, read its log."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

TIMEOUT_MS = 60_000


def run_flow(page: Page, url: str, token: str, regions: int, shots: Path | None = None) -> str:
    """Drive the console; return the finished task's id. ``regions`` is how many regions have
    pools. Saves screenshots into ``shots``."""

    def shot(name: str) -> None:
        if shots is not None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

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
    expect(page.locator("svg .region")).to_have_count(regions)
    shot("overview")

    page.click("nav >> text=Pools")
    row = page.locator("#pools tr[data-cpi]").first
    expect(row).to_contain_text("healthy")
    shot("pools")

    page.click("nav >> text=Submit")
    page.fill("#f-name", "from-the-browser")
    page.fill("#f-command", "echo hello-from-the-console; echo second line")
    shot("submit")
    page.click("#submit-task")
    expect(page.locator("#task-state")).to_contain_text("COMPLETE")
    expect(page.locator("pre.stdout")).to_contain_text("hello-from-the-console")
    expect(page.locator("#timeline")).to_contain_text("placed on")
    task_id = page.url.rsplit("/", 1)[1]
    shot("task")

    page.click("nav >> text=Tasks")
    expect(page.locator("#tasks")).to_contain_text("from-the-browser")
    page.select_option("#state", "COMPLETE")
    expect(page.locator("#tasks")).to_contain_text(task_id)
    shot("tasks")

    page.click("nav >> text=Usage")
    expect(page.locator("main svg").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Advance reservations")
    shot("usage")
    page.click("nav >> text=Network")
    expect(page.locator("#provider-quality")).to_contain_text("cn/")
    shot("network")
    return task_id
