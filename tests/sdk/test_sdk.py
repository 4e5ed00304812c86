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


SERVER = "import time\ntime.sleep(600)\n"


def _service_dir(tmp_path: Path) -> Path:
    (tmp_path / "server.py").write_text(SERVER)
    return tmp_path


def _service(name: str) -> dict[str, object]:
    return {
        "name": name,
        "executor": {"command": ["python3", "server.py"]},
        "replicas": {"min": 1, "max": 2},
        "access": "key",
        "inputs": [{"path": "server.py", "local": "server.py"}],
    }


def test_sync_service_calls(node: tuple[str, str], tmp_path: Path) -> None:
    url, token = node
    with Client(url, token) as c:
        out = c.service_deploy(_service("sync-svc"), base_dir=_service_dir(tmp_path))
        assert out.created and out.key and out.name == "sync-svc"
        assert "sync-svc" in {s.name for s in c.service_list()}
        assert c.service_status("sync-svc").max == 2
        assert c.service_scale("sync-svc", max=3).max == 3
        key = c.service_key_create("sync-svc")
        assert key.key and key.id in {k.id for k in c.service_keys("sync-svc")}
        c.service_key_revoke("sync-svc", key.id)
        assert key.id not in {k.id for k in c.service_keys("sync-svc")}
        with pytest.raises(NotFound):
            c.service_logs("sync-svc", replica=99)
        c.service_delete("sync-svc")
        with pytest.raises(NotFound):
            c.service_status("no-such-svc")
        with pytest.raises(InvalidInput, match="leaves the service file's directory"):
            bad = {**_service("x"), "inputs": [{"path": "a", "local": "../a"}]}
            c.service_deploy(bad, base_dir=tmp_path)


def test_async_service_calls_match_the_sync_ones(node: tuple[str, str], tmp_path: Path) -> None:
    url, token = node
    base = _service_dir(tmp_path)

    async def scenario() -> None:
        async with AsyncClient(url, token) as c:
            out = await c.service_deploy(_service("async-svc"), base_dir=base)
            assert out.created and out.key and out.version
            again = await c.service_deploy(_service("async-svc"), base_dir=base)
            assert not again.created and again.key is None
            assert "async-svc" in {s.name for s in await c.service_list()}
            with pytest.raises(InvalidInput, match="scale_to_zero"):  # the same errors
                await c.service_scale("async-svc", min=0)
            assert (await c.service_scale("async-svc", min=2, max=3)).max == 3
            status = await c.service_status("async-svc")
            assert status.min == 2 and status.access == "key"
            key = await c.service_key_create("async-svc")
            assert key.id in {k.id for k in await c.service_keys("async-svc")}
            await c.service_key_revoke("async-svc", key.id)
            assert key.id not in {k.id for k in await c.service_keys("async-svc")}
            with pytest.raises(NotFound):
                await c.service_key_revoke("async-svc", key.id)
            with pytest.raises(NotFound):
                await c.service_logs("async-svc", replica=99)
            await c.service_delete("async-svc")
            with pytest.raises(NotFound):
                await c.service_status("no-such-svc")

    asyncio.run(scenario())
