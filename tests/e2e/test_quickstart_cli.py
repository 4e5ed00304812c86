"""Must-show 1 and 4 (CLI side): `computenet up`, then submit/logs/status from another shell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeproc import Proc, cli, free_port, start_node

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, dict[str, str]]]:
    base = tmp_path_factory.mktemp("quickstart")
    port = free_port()
    # The client finds the node through the config file `up` writes: no URL or token flags.
    env = {"COMPUTENET_CONFIG": str(base / "client.json")}
    import os

    old = {
        k: os.environ.get(k) for k in ("COMPUTENET_CONFIG", "COMPUTENET_URL", "COMPUTENET_TOKEN")
    }
    os.environ["COMPUTENET_CONFIG"] = env["COMPUTENET_CONFIG"]
    os.environ.pop("COMPUTENET_URL", None)
    os.environ.pop("COMPUTENET_TOKEN", None)
    proc = start_node(base / "data", port, "--cpus", "4", up=True)
    try:
        yield proc, env
    finally:
        proc.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_submit_logs_status(up: tuple[Proc, dict[str, str]]) -> None:
    proc, env = up
    assert "admin token" in proc.output()
    assert Path(env["COMPUTENET_CONFIG"]).stat().st_mode & 0o077 == 0  # owner-only
    sub = cli("submit", "--", "echo", "hello")
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    assert task_id.startswith("cn-")
    waited = cli("status", "--wait", task_id)
    assert waited.returncode == 0, waited.stderr
    status = cli("status", task_id)
    assert status.stdout.strip() == "COMPLETE"
    logs = cli("logs", task_id)
    assert logs.stdout == "hello\n"


def test_submit_wait_shows_progress_and_fails_on_error(up: tuple[Proc, dict[str, str]]) -> None:
    res = cli("submit", "--wait", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert res.returncode == 1
    assert "EXECUTOR_ERROR" in res.stdout
    task_id = res.stdout.split()[0]
    err = cli("logs", "--stderr", task_id)
    assert err.stdout == "oops\n"
    full = json.loads(cli("status", "--json", task_id).stdout)
    assert full["attempts"][0]["executors"][0]["exit_code"] == 3


def test_read_commands_have_json(up: tuple[Proc, dict[str, str]]) -> None:
    pools = json.loads(cli("pools", "--json").stdout)["pools"]
    assert pools[0]["cpi"] == "cn/local/host"
    assert pools[0]["spec"]["cpu_cores"] == 4
    assert json.loads(cli("list", "--json").stdout)["tasks"]
    rec = json.loads(cli("resolve", "--json", "cn/local/host").stdout)
    assert rec["served_by"] == "cn"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status", "cn-NOSUCHTASK"], "no task"),
        (["logs", "cn-NOSUCHTASK"], "no task"),
        (["cancel", "cn-NOSUCHTASK"], "no task"),
        (["resolve", "jp/acme/x"], "outside this node's prefix"),
        (["resolve", "cn.44/acme/x"], "no resource"),
        (["resolve", "not-a-cpi"], "three parts"),
        (["submit", "--cpus", "0", "--", "true"], "cpu_cores"),
        (["submit", "--ram-gb", "-1", "--", "true"], "ram_gb"),
        (["submit"], "either --file"),
        (["submit", "--file", "/nonexistent.yaml"], "cannot read"),
        (["list", "--token", "wrong"], "invalid token"),
    ],
)
def test_cli_errors_are_one_line(
    up: tuple[Proc, dict[str, str]], args: list[str], needle: str
) -> None:
    res = cli(*args)
    assert res.returncode != 0
    assert needle in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_rejects_bad_task_file(up: tuple[Proc, dict[str, str]], tmp_path: Path) -> None:
    bad = tmp_path / "task.yaml"
    bad.write_text("executors:\n  - command: [echo, hi]\n    colour: red\n")
    res = cli("submit", "-f", str(bad))
    assert res.returncode != 0
    assert "unknown field" in res.stderr
    good = tmp_path / "ok.yaml"
    good.write_text("name: from-file\nexecutors:\n  - command: [echo, from, file]\n")
    res = cli("submit", "--wait", "-f", str(good))
    assert res.returncode == 0, res.stderr
    assert cli("logs", res.stdout.split()[0]).stdout == "from file\n"


def test_unreachable_node_is_one_line() -> None:
    res = cli("list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert res.returncode != 0
    assert "cannot reach node" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_hostile_tasks_do_not_stop_the_gateway(
    up: tuple[Proc, dict[str, str]], tmp_path: Path
) -> None:
    """64 executors with images, and 3 MB of output per stream: both finish, the end of the
    log survives, and the gateway still runs the next task."""
    many = tmp_path / "many.yaml"
    many.write_text("executors:\n" + "  - {image: alpine, command: [echo, hi]}\n" * 64)
    res = cli("submit", "--wait", "-f", str(many))
    assert res.returncode == 0, res.stdout + res.stderr
    assert cli("logs", res.stdout.split()[0]).stdout == "hi\n" * 64

    big = "python3 -c \"import sys; sys.stdout.write('x' * 3_000_000 + '\\nTHE END\\n')\""
    res = cli("submit", "--wait", "--", "sh", "-c", f"{big}; {big} >&2")
    assert res.returncode == 0, res.stdout + res.stderr
    task_id = res.stdout.split()[0]
    assert cli("logs", task_id).stdout.endswith("x\nTHE END\n")
    assert cli("logs", "--stderr", task_id).stdout.endswith("x\nTHE END\n")

    after = cli("submit", "--wait", "--", "echo", "still here")
    assert after.returncode == 0, after.stdout + after.stderr
