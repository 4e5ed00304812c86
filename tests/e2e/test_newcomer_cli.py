"""A newcomer's first hour through the real CLI against a real node: every message says what
to do, failures show why, read commands speak JSON, and a busy port is one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nodeproc import CLI, Proc, admin_token, cli, free_port, start_node

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, dict[str, str]]]:
    base = tmp_path_factory.mktemp("newcomer")
    port = free_port()
    proc = start_node(base / "data", port, "--cpus", "2", up=True)
    env = {
        "COMPUTENET_URL": f"http://127.0.0.1:{port}",
        "COMPUTENET_TOKEN": admin_token(proc),
        "COMPUTENET_CONFIG": str(base / "client.json"),
    }
    try:
        yield proc, env
    finally:
        proc.stop()


def one_line_error(res: subprocess.CompletedProcess[str], needle: str) -> None:
    assert res.returncode != 0, res.stdout
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def submit(env: dict[str, str], *args: str) -> str:
    res = cli("submit", *args, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()[0]


def test_busy_port_is_one_line_and_touches_nothing(
    node: tuple[Proc, dict[str, str]], tmp_path: Path
) -> None:
    _proc, env = node
    port = env["COMPUTENET_URL"].rsplit(":", 1)[1]
    config = Path(env["COMPUTENET_CONFIG"])
    before = config.read_text()
    data = tmp_path / "other"
    for command in (["up"], ["node"]):
        res = cli(*command, "--data-dir", str(data), "--port", port, env=env)
        one_line_error(res, f"port {port} on 127.0.0.1 is already in use")
        assert "--port" in res.stderr
    assert not data.exists()  # no store created, no admin token minted
    assert config.read_text() == before  # the running node's client config survives
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        res = cli(
            "gateway",
            *("--node", env["COMPUTENET_URL"], "--state-dir", str(tmp_path / "gw")),
            *("--metrics-port", taken),
            env=env,
        )
    one_line_error(res, f"port {taken} on 127.0.0.1 is already in use")


def test_banner_names_the_console_and_root_redirects_there(
    node: tuple[Proc, dict[str, str]],
) -> None:
    proc, env = node
    url = env["COMPUTENET_URL"]
    assert f"console {url}/console/" in proc.output()
    r = httpx.get(url + "/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/console/"
    assert httpx.get(url + "/", follow_redirects=True).status_code == 200


def test_a_failed_task_says_why(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    res = cli("submit", "--wait", "--", "sh", "-c", "echo out; echo oops >&2; exit 3", env=env)
    assert res.returncode == 1
    assert "EXECUTOR_ERROR" in res.stdout
    assert "executor 0 (sh) exited with code 3" in res.stdout
    assert "stderr (last 1 line):\n    oops" in res.stdout
    tid = res.stdout.split()[0]
    status = cli("status", tid, env=env)
    assert status.stdout.startswith("EXECUTOR_ERROR\n")
    assert "exited with code 3" in status.stdout and "oops" in status.stdout
    logs = cli("logs", tid, env=env)
    assert logs.stdout == "out\n" and logs.stderr == "--- stderr ---\noops\n"
    assert cli("logs", "--stdout", tid, env=env).stderr == ""
    assert cli("logs", "--stderr", tid, env=env).stdout == "oops\n"
    both = json.loads(cli("logs", "--json", tid, env=env).stdout)
    assert both == {"id": tid, "stdout": "out\n", "stderr": "oops\n"}
    one_line_error(cli("logs", "--stdout", "--stderr", tid, env=env), "not both")


def test_unknown_accelerator_model_is_refused_and_the_catalog_listed(
    node: tuple[Proc, dict[str, str]],
) -> None:
    _, env = node
    res = cli("submit", "--gpu-model", "nvidia-zz9000", "--", "true", env=env)
    one_line_error(res, "unknown accelerator model 'nvidia-zz9000'")
    assert "nvidia-h100-sxm" in res.stderr and "computenet catalog" in res.stderr
    catalog = cli("catalog", env=env)
    assert catalog.returncode == 0 and "nvidia-h100-sxm" in catalog.stdout
    models = json.loads(cli("catalog", "--json", "--vendor", "huawei", env=env).stdout)
    assert models and all(m["vendor"] == "huawei" for m in models)


def test_explain_speaks_plainly(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    tid = submit(env, "--gpus", "1", "--", "true")
    try:
        text = cli("explain", tid, env=env).stdout
        assert "why: no pool has 1 accelerator card (1 pool checked)" in text, text
        assert "accelerator vendor/model: excluded 1 pool\n" in text
        assert "0 of 1 pool pass" in text
        assert "gang" not in text and "cards in one pool" not in text
    finally:
        cli("cancel", tid, env=env)


def test_wait_on_a_task_that_cannot_be_placed_stops_with_the_reason(
    node: tuple[Proc, dict[str, str]],
) -> None:
    _, env = node
    res = cli("submit", "--wait", "--timeout-s", "3", "--cpus", "99", "--", "true", env=env)
    one_line_error(res, "still QUEUED after 3 s: no machine has 99 CPU cores")
    assert "no machine has 99 CPU cores" in res.stdout  # said while waiting too
    tid = res.stdout.split()[0]
    res = cli("status", "--wait", "--timeout-s", "1", tid, env=env)
    one_line_error(res, f"task {tid} still QUEUED")
    cli("cancel", tid, env=env)


def test_list_pages_and_why(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    ids = [submit(env, "--cpus", "99", "--name", f"big-{i}", "--", "true") for i in range(3)]
    try:
        first = cli("list", "--limit", "1", "--state", "queued", env=env)
        assert ids[-1] in first.stdout and "why" in first.stdout
        assert "no machine has 99 CPU cores" in first.stdout
        hint = first.stdout.strip().splitlines()[-1]
        assert hint.startswith("more tasks: computenet list --limit 1 --page-token ")
        token = hint.rsplit(" ", 1)[1]
        second = cli("list", "--limit", "1", "--state", "queued", "--page-token", token, env=env)
        assert ids[-2] in second.stdout and ids[-1] not in second.stdout
    finally:
        for tid in ids:
            cli("cancel", tid, env=env)


def test_read_commands_speak_json(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    pools = json.loads(cli("pools", "--json", env=env).stdout)
    assert set(pools) == {"pools"} and pools["pools"][0]["cpi"] == "cn/local/host"
    table = cli("pools", env=env).stdout
    assert "price" in table and "0/core-h" in table
    audit = cli("audit", "--json", "--limit", "5", env=env)
    assert audit.returncode == 0, audit.stderr
    ids = [row["id"] for row in json.loads(audit.stdout)["events"]]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)  # newest first
    oldest = json.loads(cli("audit", "--json", "--oldest-first", "--limit", "3", env=env).stdout)
    assert [r["id"] for r in oldest["events"]] == sorted(r["id"] for r in oldest["events"])
    assert oldest["events"][0]["id"] < ids[-1]
    node_rec = json.loads(cli("resolve", "--json", "cn", env=env).stdout)
    assert node_rec["record"]["kind"] == "node" and node_rec["record"]["pools"] == 1
    text = cli("resolve", "cn", env=env).stdout
    assert f"node cn at {env['COMPUTENET_URL']}: 1 pool (1 healthy)" in text
    one_line_error(cli("resolve", "not-a-cpi", env=env), "neither a node code")
    one_line_error(cli("resolve", "cn.99", env=env), "no node cn.99 is known here")


def test_console_overview_answers_every_role(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    minted = cli("token", "create", "user", "newbie", "--json", env=env)
    user = json.loads(minted.stdout)["token"]
    submit({**env, "COMPUTENET_TOKEN": user}, "--", "true")
    r = httpx.get(
        env["COMPUTENET_URL"] + "/api/v1/console/overview",
        headers={"Authorization": f"Bearer {user}"},
    )
    assert r.status_code == 200, r.text
    assert sum(r.json()["tasks_by_state"].values()) == 1  # only their own task


def test_help_is_plain_and_there_is_a_version(node: tuple[Proc, dict[str, str]]) -> None:
    _, env = node
    narrow = {**env, "COLUMNS": "80"}
    top = cli("--help", env=narrow).stdout
    assert "Submit a task from a file (-f task.yaml) or a command (-- echo" in top
    commands = top.split("Commands:")[1]
    assert "hello)." in commands and "..." not in commands  # wrapped, never cut
    sub = cli("submit", "--help", env=narrow).stdout
    assert "<bool>" not in sub and "-w, --wait" in sub and "--timeout-s" in sub
    version = cli("--version", env=env)
    assert version.returncode == 0 and version.stdout.startswith("computenet 0.")


def test_misspelled_task_key_is_named(node: tuple[Proc, dict[str, str]], tmp_path: Path) -> None:
    _, env = node
    bad = tmp_path / "task.yaml"
    bad.write_text("executors:\n  - comand: [echo, hi]\n")
    one_line_error(
        cli("submit", "-f", str(bad), env=env),
        "executors.0.comand: unknown field 'comand' (did you mean 'command'?)",
    )
    bad.write_text("executor:\n  - command: [echo, hi]\n")
    one_line_error(cli("submit", "-f", str(bad), env=env), "did you mean 'executors'?")


def test_local_files_go_as_inputs(node: tuple[Proc, dict[str, str]], tmp_path: Path) -> None:
    _, env = node
    (tmp_path / "train.py").write_text("print('trained', 6 * 7)\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "submit", "--wait", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, **env},
            check=False,
        )

    missed = run("--", "python3", "train.py")
    assert "note: train.py is a file here" in missed.stderr
    assert "--input train.py" in missed.stderr
    sent = run("--input", "train.py", "--", "python3", "train.py")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "note:" not in sent.stderr
    assert cli("logs", sent.stdout.split()[0], env=env).stdout == "trained 42\n"
    one_line_error(
        cli("submit", "--input", str(tmp_path / "nope.py"), "--", "true", env=env),
        "cannot read it",
    )


def test_sim_keeps_earlier_results(tmp_path: Path) -> None:
    out = tmp_path / "sim-out"
    args = ["sim", "--trace", "synthetic:5", "--policies", "first-fit", "--out", str(out)]
    assert cli(*args).returncode == 0
    one_line_error(cli(*args), "is not empty")
    assert cli(*args, "--force").returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status"], "Missing argument 'task_id'. (see `computenet status --help`)"),
        (["statu"], "Did you mean 'status'?"),
        (["submit", "--cpus", "x", "--", "true"], "Invalid value for '--cpus'"),
        (["token", "create"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    res = cli(*args)
    one_line_error(res, needle)
    assert res.returncode == 2


def test_bare_command_prints_help_and_a_closed_pipe_is_quiet() -> None:
    bare = cli()
    assert bare.returncode == 0 and bare.stdout.startswith("Usage: ")
    piped = subprocess.run(
        ["bash", "-c", f"{' '.join(CLI)} catalog | head -1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0 and "Traceback" not in piped.stderr, piped.stderr
