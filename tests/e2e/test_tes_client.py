"""Must-show 2: the py-tes client against a running node with a local gateway."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import requests
import tes

from nodeproc import Proc, admin_token, free_port, pids_matching, start_node

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    base = tmp_path_factory.mktemp("tes")
    port = free_port()
    proc: Proc = start_node(base / "data", port, "--cpus", "4", up=True)
    try:
        yield f"http://127.0.0.1:{port}", admin_token(proc)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def tes_client(node: tuple[str, str]) -> tes.HTTPClient:
    url, token = node
    return tes.HTTPClient(url, token=token, timeout=10)


def test_basic_authentication_with_the_token_as_password(node: tuple[str, str]) -> None:
    """Workflow engines configured with a user and a password (Snakemake, Nextflow) send
    HTTP Basic: the token is the password, the user name is free."""
    url, token = node
    basic = tes.HTTPClient(url, user="snakemake", password=token, timeout=10)
    task_id = basic.create_task(_task("basic", "echo", "via basic"))
    assert basic.wait(task_id, timeout=60).state in ("COMPLETE", "EXECUTOR_ERROR")
    assert basic.get_task(task_id, view="FULL").name == "basic"
    assert task_id in {t.id for t in basic.list_tasks(view="MINIMAL").tasks}
    wrong = tes.HTTPClient(url, user="snakemake", password="cna_wrong", timeout=10)
    with pytest.raises(requests.HTTPError, match="401"):
        wrong.list_tasks()


def _task(name: str, *command: str) -> tes.Task:
    return tes.Task(
        name=name,
        executors=[tes.Executor(image="alpine", command=list(command))],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
    )


def test_service_info(tes_client: tes.HTTPClient) -> None:
    info = tes_client.get_service_info()
    assert info.type["artifact"] == "tes"


def test_echo_hello_completes(tes_client: tes.HTTPClient) -> None:
    task_id = tes_client.create_task(_task("hello", "echo", "hello"))
    tes_client.wait(task_id, timeout=60)
    task = tes_client.get_task(task_id, view="FULL")
    assert task.state == "COMPLETE"
    assert "hello" in task.logs[-1].logs[0].stdout
    assert any("image 'alpine' not used" in line for line in task.logs[-1].system_logs)


def test_list_follows_page_tokens(tes_client: tes.HTTPClient) -> None:
    created = {tes_client.create_task(_task(f"page-{i}", "true")) for i in range(7)}
    seen: list[str] = []
    token = None
    while True:
        page = tes_client.list_tasks(view="MINIMAL", page_size=2, page_token=token)
        assert len(page.tasks) <= 2
        seen.extend(t.id for t in page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a task appeared on two pages"
    assert created <= set(seen)


def test_cancel_kills_the_process(tes_client: tes.HTTPClient) -> None:
    seconds = f"600.{random.randint(100, 999)}"  # unique, so we find exactly this process
    task_id = tes_client.create_task(_task("sleeper", "sleep", seconds))
    pattern = f"sleep {seconds}"
    deadline = time.monotonic() + 30
    while not pids_matching(pattern):
        assert time.monotonic() < deadline, "the sleep never started"
        time.sleep(0.1)
    assert tes_client.get_task(task_id).state in ("INITIALIZING", "RUNNING")
    tes_client.cancel_task(task_id)
    deadline = time.monotonic() + 30
    while tes_client.get_task(task_id).state != "CANCELED":
        assert time.monotonic() < deadline, tes_client.get_task(task_id, view="FULL")
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while pids_matching(pattern):
        assert time.monotonic() < deadline, "the sleep process survived the cancel"
        time.sleep(0.1)
