"""Sandboxed execution on the local backend: a gateway running as root runs each task as a
uid of its own from its range, in bubblewrap, in a directory of its own, under resource
limits, with a scrubbed environment and a clean PATH (issues 9, 14, 15)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend_testing import unavailable
from computenet.errors import InvalidInput
from computenet.gateway.backends.bwrap import TASK_PATH, SandboxGate, bwrap_command, bwrap_path
from computenet.gateway.backends.cgroups import TaskCgroup, limits_for
from computenet.gateway.backends.sandbox import choose_sandbox, limits, rlimits, set_rlimits
from nodeproc import admin_token, free_port, start_node

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is private to root, so the task user could not reach
    # a directory below it. /tmp is open to all.
    path = Path(tempfile.mkdtemp(prefix="cn-sandbox-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@as_root
@pytest.mark.parametrize(
    "input_path",
    [
        "in.txt",  # relative: the task runs as nobody directly
        "/tmp/cn-in.txt",  # the task's private /tmp, bound from its directory
    ],
)
def test_a_root_gateway_runs_tasks_as_their_own_uid_in_their_own_directory(
    tmp_path: Path, sandbox_dir: Path, input_path: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    require_bwrap()
    # No --run-as: the default. The empty variable overrides the test suite's "root".
    node = start_node(
        tmp_path / "node",
        port,
        "--cpus",
        "1",
        "--sandbox-dir",
        str(sandbox_dir),
        up=True,
        env={"COMPUTENET_RUN_AS": ""},
    )
    script = (
        "id -u; id -G; echo $HOME; pwd; echo mine > mine.txt && cat mine.txt; "
        "touch /root/cn-sandbox-probe 2>/dev/null && echo WROTE-ROOT || echo denied; "
        "ls /root >/dev/null 2>&1 && echo LISTED-ROOT || echo denied; "
        "ulimit -c; ulimit -n; ulimit -v; env | sort | cut -d= -f1 | tr '\\n' ' '; echo; "
        f"cat {input_path}; echo; echo $PATH; mkdir o && echo wrote-workdir"
    )
    spec = {
        "executors": [
            {"command": ["sh", "-c", script], "env": {"GREETING": "hi"}},
            # Issue 15: a missing command is "not found" (127), not "Permission denied".
            {"command": ["no-such-command-here"], "ignore_error": True},
            {"command": ["sh", "-c", "mkdir o && echo ok"], "workdir": "/outside-any-volume"},
        ],
        "inputs": [{"path": input_path, "content": "staged as root"}],
        "resources": {"cpu_cores": 1, "ram_gb": 1},
    }
    try:
        auth = {"Authorization": f"Bearer {admin_token(node)}"}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:
            tid = http.post("/api/v1/tasks", json=spec).json()["id"]
            deadline = time.monotonic() + 60
            while (task := http.get(f"/api/v1/tasks/{tid}").json())["state"] not in (
                "COMPLETE",
                "EXECUTOR_ERROR",
                "SYSTEM_ERROR",
            ):
                assert time.monotonic() < deadline, task
                time.sleep(0.2)
        assert task["state"] == "COMPLETE", task["attempts"][0]
        lines = task["attempts"][0]["executors"][0]["stdout"].splitlines()
        assert 61000 <= int(lines[0]) <= 61999 and lines[1] == lines[0]
        home = Path(lines[2])
        assert home.parent == sandbox_dir and lines[3] == lines[2]
        assert lines[4] == "mine" and lines[5:7] == ["denied", "denied"]
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the gateway inherits it
        expected_files = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        assert lines[7] == "0" and int(lines[8]) == expected_files
        assert int(lines[9]) == (1 * 1024**3 * 4 + 1024**3) // 1024  # KiB
        names = set(lines[10].split())
        assert names <= {
            "GREETING",
            "HOME",
            "LANG",
            "LC_ALL",
            "PATH",
            "PWD",
            "SHLVL",
            "TMPDIR",
            "TZ",
            "_",
            "OLDPWD",
        }, names
        assert "COMPUTENET_RUN_AS" not in names
        assert lines[11] == "staged as root"  # handed over to the task's user
        assert lines[12] == TASK_PATH and lines[13] == "wrote-workdir"
        missing = task["attempts"][0]["executors"][1]
        assert missing["exit_code"] == 127, missing
        assert "no-such-command-here: No such file or directory" in missing["stderr"], missing
        assert task["attempts"][0]["executors"][2]["stdout"].strip() == "ok"
        # Removed once the gateway knows the node has the result.
        deadline = time.monotonic() + 30
        while (sandbox_dir / home.name).exists():
            assert time.monotonic() < deadline, "the task's directory was never removed"
            time.sleep(0.1)
    finally:
        node.stop()


def require_bwrap() -> None:
    if bwrap_path() is None:
        unavailable("bubblewrap (bwrap) is not installed: scripts/isolation-up.sh installs it")


def test_choosing_the_task_users() -> None:
    if os.geteuid() != 0:
        assert choose_sandbox(None) is None  # tasks run as the gateway's own user
        with pytest.raises(InvalidInput, match="needs the gateway to run as root"):
            choose_sandbox("nobody")
        return
    require_bwrap()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp) / "tasks"
        box = choose_sandbox(None, root, "62000-62009")
        assert box is not None and list(box.uids()) == list(range(62000, 62010))
        assert root.stat().st_mode & 0o777 == 0o711
        assert choose_sandbox("root", root) is None  # explicit, and logged as a warning
        with pytest.raises(InvalidInput, match="only takes 'root'"):
            choose_sandbox("nobody", root)
        with pytest.raises(InvalidInput, match="existing users"):
            choose_sandbox(None, root, "1000-65534")
        with pytest.raises(InvalidInput, match="expected FIRST-LAST"):
            choose_sandbox(None, root, "many")


def test_limits_for_cpu_and_accelerator_work() -> None:
    pid = os.fork()
    if pid == 0:  # apply the limits in a child, as the runner's executors do
        ok = False
        try:
            limits({"ram_gb": 2, "disk_gb": 1})()
            ok = (
                resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
                and resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 1024**3
                and resource.getrlimit(resource.RLIMIT_AS)[0] == 9 * 1024**3
            )
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            limits({"ram_gb": 2, "accelerator": {"count": 1}})()
            ok = resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


@as_root
def test_a_held_sandbox_gets_its_cgroup_and_limits_before_its_command_runs(
    sandbox_dir: Path,
) -> None:
    require_bwrap()
    uid = 62960
    work = sandbox_dir / "w"
    work.mkdir(mode=0o700)
    os.chown(work, uid, uid)
    group = TaskCgroup(f"test-held-{os.getpid()}")
    group.create(limits_for({"ram_gb": 1}, 64))
    gate = SandboxGate()
    # What the command sees first: its limits, and that it is in the group (a child of it
    # shows up in the group's process list, read from outside).
    script = (
        "grep -E '^Max (open files|processes)' /proc/self/limits | tr -s ' ' | cut -d' ' -f4; "
        "sleep 5 & wait"
    )
    argv = bwrap_command(
        ["sh", "-c", script],
        work=work,
        roots=[],
        chdir=str(work),
        uid=uid,
        gid=uid,
        info_fd=gate.info_w,
        block_fd=gate.block_r,
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, pass_fds=gate.child_fds(), text=True)
    try:
        pid = gate.sandbox_pid()
        group.add(pid)
        set_rlimits(pid, rlimits({"ram_gb": 1}, 64))
        assert group.pids() == {pid}  # held: nothing of the task has started yet
        gate.release()
        assert proc.stdout is not None
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        files = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        # /proc/self/limits lists processes before open files.
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["64", str(files)]
        deadline = time.monotonic() + 10
        while len(group.pids()) < 3:  # pid 1, the shell, its sleep
            assert time.monotonic() < deadline, group.pids()
            time.sleep(0.02)
        group.kill()
        assert proc.wait(timeout=10) != 0 and group.pids() == set()
    finally:
        proc.kill()
        proc.wait()
        group.remove()
