"""The SDK, sync and async, against a real node with a local gateway; the examples run too."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from computenet.errors import InvalidInput, NotFound
from computenet.model.task import TaskState
from computenet.node.views import TaskOut
from computenet.sdk import AsyncClient, Client
from nodeproc import Proc, admin_token, free_port, start_node

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ECHO = {"executors": [{"command": ["echo", "hi"]}]}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    base = tmp_path_factory.mktemp("sdk")
    port = free_port()
    proc: Proc = start_node(base / "data", port, "--cpus", "2", up=True)
    try:
        yield f"http://127.0.0.1:{port}", admin_token(proc)
    finally:
        proc.stop()


def test_sync_client_calls(node: tuple[str, str]) -> None:
    url, token = node
    seen: list[TaskState] = []
    with Client(url, token) as c:
        tid = c.submit(ECHO)
        task = c.wait(tid, timeout_s=60, on_change=lambda t: seen.append(t.state))
        assert task.state is TaskState.COMPLETE and seen[-1] is TaskState.COMPLETE
        assert c.logs(tid) == "hi\n"
        (usage,) = c.usage(tid)
        assert usage.attempt == 1 and usage.pool == task.pool
        assert task.pool in {p.cpi for p in c.pools()}
        assert c.resolve(str(task.pool))
        assert tid in {t.id for t in c.list_tasks().tasks}
        sleeper = c.submit({"executors": [{"command": ["sleep", "300"]}]})
        assert c.cancel(sleeper) in (TaskState.CANCELED, TaskState.CANCELING)
        assert c.wait(sleeper, timeout_s=60).state is TaskState.CANCELED
        with pytest.raises(NotFound):
            c.get("cn-00000000000000000000000000")
        with pytest.raises(ValueError):  # checked against the server's schema before sending
            c.submit({"executors": []})
        with pytest.raises(InvalidInput):
            c.submit({"executors": [{"command": ["x"]}], "placement": {"pool": "bad cpi"}})


def test_async_client_calls(node: tuple[str, str]) -> None:
    url, token = node

    async def scenario() -> tuple[list[TaskOut], str, int]:
        async with AsyncClient(url, token) as c:
            ids = await asyncio.gather(*(c.submit(ECHO) for _ in range(3)))
            done = await asyncio.gather(*(c.wait(t, timeout_s=60, progress=True) for t in ids))
            logs = await c.logs(ids[0])
            pools = await c.pools()
            await c.resolve(pools[0].cpi)
            assert len(await c.usage(ids[0])) == 1
            sleeper = await c.submit({"executors": [{"command": ["sleep", "300"]}]})
            await c.cancel(sleeper)
            assert (await c.wait(sleeper, timeout_s=60)).state is TaskState.CANCELED
            listed = await c.list_tasks(page_size=2)
            return list(done), logs, len(listed.tasks)

    done, logs, listed = asyncio.run(scenario())
    assert all(t.state is TaskState.COMPLETE for t in done)
    assert logs == "hi\n" and listed == 2


@pytest.mark.parametrize("example", ["sdk_sync.py", "sdk_async.py"])
def test_examples_run(node: tuple[str, str], example: str) -> None:
    url, token = node
    env = {**os.environ, "COMPUTENET_URL": url, "COMPUTENET_TOKEN": token}
    run = subprocess.run(
        [sys.executable, str(REPO / "examples" / example)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "COMPLETE" in run.stdout
    expected = "hello from the SDK" if example == "sdk_sync.py" else "task 2"
    assert expected in run.stdout
