"""Attacks a consumer's task can try on a provider's host (issue 14, classes 1, 3, 4, 5, 6),
against a real node and a separate gateway running as root that isolates tasks: each one is
refused or contained, and the test shows it (nothing read or written, the process gone, the
connection refused)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isolation_site import Site, start_site, stdout, task_spec
from nodeproc import pids_matching

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("attacks"))


def _digests(*roots: Path) -> set[str]:
    """SHA-256 of every non-empty file under ``roots``: the secrets no output may hold."""
    out = set()
    for root in roots:
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file() and not f.is_symlink() and f.stat().st_size:
                out.add(hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def _live(marker: str) -> list[int]:
    """Processes with ``marker`` in their command line that still exist."""
    return [p for p in pids_matching(marker) if Path(f"/proc/{p}").exists()]


def _uids(pids: list[int]) -> set[int]:
    """The uids these processes run as (those still alive)."""
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            out.add(Path(f"/proc/{pid}").stat().st_uid)
    return out


def test_symlinked_logs_and_outputs_lead_nowhere(site: Site) -> None:
    victim = site.victim_dir / "victim.txt"
    cron = Path("/etc/cron.d/computenet-attack")
    secrets = [Path("/etc/shadow"), site.node_dir, site.state_dir]
    script = " && ".join(
        [
            "mkdir -p /data/tree/sub",
            "echo mine > /data/tree/mine.txt",
            "echo deep > /data/tree/sub/deep.txt",
            "ln -s /etc/shadow /data/tree/shadow.txt",
            f"ln -s {site.state_dir} /data/tree/state",
            f"ln -s {site.node_dir} /data/tree/sub/node",
            f"ln -s {victim} /data/log.txt",  # the gateway writes stdout here
            f"ln -s {cron} /data/err.txt",  # and stderr here
            "ln -s /etc/shadow /data/shadow",
            "echo done",
        ]
    )
    dest = site.dest / "t1"
    spec = task_spec(
        script,
        outputs=[
            {"url": f"file://{dest}/tree", "path": "/data/tree", "type": "DIRECTORY"},
            {"url": f"file://{dest}/w", "path": "/data/tree/*", "path_prefix": "/data/tree"},
        ],
    )
    spec["executors"][0].update(stdout="/data/log.txt", stderr="/data/err.txt")
    task = site.run("acme", spec)
    assert task["state"] == "COMPLETE", task
    assert victim.read_text() == "original\n" and not cron.exists()
    stored = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert stored == ["tree/mine.txt", "tree/sub/deep.txt", "w/mine.txt"], stored
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    # A file output that is a symlink is refused, and nothing is written.
    leak = task_spec(
        "ln -s /etc/shadow /data/shadow",
        outputs=[{"url": f"file://{site.dest}/t1b/shadow", "path": "/data/shadow"}],
    )
    task = site.run("acme", leak)
    assert task["state"] == "SYSTEM_ERROR", task
    assert not (site.dest / "t1b" / "shadow").exists()
    # A directory output swapped for a symlink is refused too.
    swap = task_spec(
        f"ln -s {site.node_dir} /data/tree",
        outputs=[{"url": f"file://{site.dest}/t1c", "path": "/data/tree", "type": "DIRECTORY"}],
        volumes=["/data"],
    )
    assert site.run("acme", swap)["state"] == "SYSTEM_ERROR"
    assert not list((site.dest).glob("t1c*"))
    assert not _digests(*secrets) & _digests(site.dest)


def test_a_directory_swapped_for_a_symlink_between_executors_is_refused(site: Site) -> None:
    # Executor 0 replaces the directory bound at /data by a link to root's directory, and
    # links the next executor's stdin to /etc/shadow; executor 1 would write through it.
    spec = task_spec(
        f'ln -s /etc/shadow /data/in && rm -rf "$HOME/data" && ln -s {site.victim_dir} "$HOME/data"'
    )
    spec["executors"].append({"command": ["sh", "-c", "cat; echo pwned > /data/victim.txt"]})
    spec["executors"][1]["stdin"] = "/data/in"
    task = site.run("acme", spec)
    assert task["state"] in ("EXECUTOR_ERROR", "SYSTEM_ERROR"), task
    assert (site.victim_dir / "victim.txt").read_text() == "original\n"
    # The stdin link alone (no swap) is refused as well: the executor cannot start.
    spec = task_spec("ln -s /etc/shadow /data/in", volumes=["/data"])
    spec["executors"].append({"command": ["cat"], "stdin": "/data/in"})
    task = site.run("acme", spec)
    assert task["state"] == "EXECUTOR_ERROR" and "root:" not in stdout(task, 1), task


def test_two_tenants_cannot_see_each_others_environment_files_or_processes(site: Site) -> None:
    marker = f"cn-secret-{os.getpid()}"
    victim = task_spec(
        f"echo private > $HOME/mine.txt; sleep 600 # {marker}",
        resources={"cpu_cores": 1, "ram_gb": 0.5, "time_limit_s": 60},
    )
    victim["executors"][0]["env"] = {"API_KEY": marker}
    vid = site.submit("acme", victim)
    deadline = time.monotonic() + 60
    # Until the task's own command runs (bwrap, root's, starts first).
    while not _uids(pids := _live(marker)) - {0}:
        assert time.monotonic() < deadline, site.gateway.output()[-2000:]
        time.sleep(0.1)
    probe = (
        f"ps -eo pid,user,args | grep -c '[{marker[0]}]{marker[1:]}'; "
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c API_KEY; "
        f"ls {site.sandbox_dir} 2>&1 | head -1; "
        "find / -name mine.txt -not -path '/proc/*' 2>/dev/null | wc -l; "
        "ps -e --no-headers | wc -l; id -u"
    )
    task = site.run("globex", task_spec(probe))
    lines = stdout(task).splitlines()
    assert task["state"] == "COMPLETE", task
    assert lines[0] == "0" and lines[1] == "0", lines  # grep finds neither process nor env
    # Only the task's own directory is there, below parents it cannot list.
    assert "No such file" in lines[2] or "Permission denied" in lines[2], lines
    assert lines[3] == "0", lines
    assert int(lines[4]) <= 5, lines  # its own shell and ps only
    # On the host: the victim's command runs as a uid of its own (bwrap itself is root's).
    uids = _uids(pids)
    assert uids - {0} and int(lines[5]) not in uids, (uids, lines)
    with site.client("acme") as http:
        http.post(f"/api/v1/tasks/{vid}/cancel")
    assert site.wait("acme", vid)["state"] == "CANCELED"


def test_job_dirs_and_gateway_state_are_closed_to_tasks(site: Site) -> None:
    places = [site.state_dir, site.state_dir / "jobs", site.node_dir, site.sandbox_dir, "/root"]
    script = "; ".join(f"ls {p} >/dev/null 2>&1 && echo OPEN {p}" for p in places)
    script += f"; cat {site.state_dir}/credential.json 2>/dev/null && echo READ; echo end"
    task = site.run("acme", task_spec(script))
    assert stdout(task).strip() == "end", task
    # And on the host, for processes outside any sandbox: closed to others.
    assert (site.state_dir / "jobs").stat().st_mode & 0o077 == 0
    assert site.sandbox_dir.stat().st_mode & 0o777 == 0o711


@pytest.mark.parametrize("ending", ["done", "failed", "canceled", "timed-out"])
def test_nothing_a_task_started_outlives_it(site: Site, ending: str) -> None:
    marker = f"cn-left-{ending}-{os.getpid()}"
    detach = (
        f"setsid sh -c 'sleep 300 # {marker}' & "
        f"nohup sh -c 'sleep 301 # {marker}' >/dev/null 2>&1 & "
        f"(sh -c 'sleep 302 # {marker}' &) ; "
        "sleep 0.5; "
    )
    end = {"done": "true", "failed": "exit 3", "canceled": "sleep 600", "timed-out": "sleep 600"}
    limit = 2 if ending == "timed-out" else 120
    spec = task_spec(
        detach + end[ending], resources={"cpu_cores": 1, "ram_gb": 0.5, "time_limit_s": limit}
    )
    tid = site.submit("acme", spec)
    deadline = time.monotonic() + 60
    while len(pids_matching(marker)) < 3:
        assert time.monotonic() < deadline, "the detached processes never started"
        time.sleep(0.1)
    if ending == "canceled":
        with site.client("acme") as http:
            http.post(f"/api/v1/tasks/{tid}/cancel")
    task = site.wait("acme", tid)
    want = {"done": "COMPLETE", "failed": "EXECUTOR_ERROR", "canceled": "CANCELED"}
    assert task["state"] == want.get(ending, "EXECUTOR_ERROR"), task
    time.sleep(2)  # the bound: nothing alive 2 s after the end
    assert pids_matching(marker) == []


def test_a_fork_bomb_leaves_the_gateway_and_another_task_working(site: Site) -> None:
    bomb = task_spec(
        "b() { b | b & }; b; sleep 6",
        resources={"cpu_cores": 1, "ram_gb": 0.5, "time_limit_s": 5},
    )
    bid = site.submit("acme", bomb)
    time.sleep(1.5)  # let it reach its limit
    other = site.run("globex", task_spec("echo still-here"))
    assert other["state"] == "COMPLETE" and stdout(other).strip() == "still-here", other
    assert httpx.get(f"{site.url}/healthz", timeout=5).status_code == 200
    assert site.wait("acme", bid)["state"] in ("EXECUTOR_ERROR", "COMPLETE")


def test_a_task_reaches_no_network_not_even_the_hosts_loopback(site: Site) -> None:
    accepted: list[str] = []
    listener = socket.create_server(("0.0.0.0", 0))  # every address of the host
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                continue
            accepted.append(str(addr))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    node_port = int(site.url.rsplit(":", 1)[1])
    host_ip = socket.gethostbyname(socket.gethostname())
    targets = [("127.0.0.1", port), ("127.0.0.1", node_port), (host_ip, node_port)]
    # The gateway's own /metrics listener, and the host's outward address (the one its
    # default route leaves from; no packet is sent to find it), where our listener answers
    # every other process on the host.
    targets += [("127.0.0.1", site.metrics_port), ("::1", site.metrics_port)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
            outward = probe.getsockname()[0]
        except OSError:
            outward = None
    if outward and not outward.startswith("127."):
        targets.append((outward, port))
        socket.create_connection((outward, port), timeout=5).close()  # live from the host
        deadline = time.monotonic() + 5
        while not accepted:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        accepted.clear()
    code = (
        "import socket\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=2).close(); print('OPEN', port)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    try:
        task = site.run(
            "acme", {**task_spec(""), "executors": [{"command": ["python3", "-c", code]}]}
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert task["state"] == "COMPLETE", task
    lines = stdout(task).splitlines()
    assert len(lines) == len(targets), lines
    assert all(line.startswith("refused") for line in lines), lines
    assert accepted == []


def test_an_image_runs_in_podman_with_the_same_guarantees(site: Site) -> None:
    marker = f"cn-in-image-{os.getpid()}"
    node_port = site.url.rsplit(":", 1)[1]
    script = (
        "id -u; cat /data/in.txt; echo; ls /usr/bin/python3 2>/dev/null || echo no-host-files; "
        f"nc -w 2 127.0.0.1 {node_port} </dev/null && echo OPEN || echo refused; "
        "ulimit -u; echo result > /data/out.txt; "
        f"setsid sh -c 'sleep 300 # {marker}' & sleep 0.3"
    )
    spec = task_spec(
        script,
        inputs=[{"path": "/data/in.txt", "content": "staged"}],
        outputs=[{"url": f"file://{site.dest}/img/out.txt", "path": "/data/out.txt"}],
    )
    spec["executors"][0]["image"] = site.image
    task = site.run("globex", spec)
    assert task["state"] == "COMPLETE", task
    lines = stdout(task).splitlines()
    assert int(lines[0]) >= 61000, lines  # the task's own uid, not root
    assert lines[1:4] == ["staged", "no-host-files", "refused"], lines
    assert int(lines[4]) == 512, lines  # the process limit
    assert (site.dest / "img" / "out.txt").read_text() == "result\n"
    time.sleep(2)
    assert _live(marker) == []


def test_a_task_over_its_memory_limit_is_killed_and_others_keep_working(site: Site) -> None:
    # 1.5 GiB of distinct, written pages (not lazily zeroed ones) against a 256 MiB limit;
    # under the address-space limit (2 GiB), so it is the cgroup that stops it.
    hog = "chunks = [b'x' * (32 << 20) for _ in range(48)]; print('NOT KILLED')"
    spec = task_spec("", resources={"cpu_cores": 1, "ram_gb": 0.25})
    spec["executors"] = [{"command": ["python3", "-c", hog]}]
    hid = site.submit("acme", spec)
    other = site.run("globex", task_spec("echo still-here"))
    assert other["state"] == "COMPLETE" and stdout(other).strip() == "still-here", other
    task = site.wait("acme", hid)
    assert task["state"] == "EXECUTOR_ERROR", task
    assert "NOT KILLED" not in stdout(task)
    executor = task["attempts"][-1]["executors"][0]
    assert executor["exit_code"] == 137, executor  # SIGKILL, from the kernel's OOM killer
    events = " ".join(
        [task.get("reason") or "", *(e.get("message") or "" for e in task.get("events") or [])]
    )
    assert "ran out of memory: killed at its limit of 0.25 GB" in events, task
    assert httpx.get(f"{site.url}/healthz", timeout=5).status_code == 200


def test_a_task_uses_no_more_cores_than_it_leased(site: Site) -> None:
    # Two busy processes for 3 s of wall time in a task that leased one core: together they
    # get at most about one core's worth of CPU time (the cgroup's quota), not two. The
    # machine has two cores, so without the quota the ratio approaches 2 when it is otherwise
    # idle; on a busy machine they get less anyway, so test_cgroups.py also shows the quota
    # throttling a spinner (a fraction of a core, below any fair share).
    burn = (
        "import os, time\n"
        "def spin():\n"
        "    end = time.monotonic() + 3\n"
        "    while time.monotonic() < end: pass\n"
        "start = time.monotonic()\n"
        "kids = [os.fork() for _ in range(2)]\n"
        "if 0 in kids:\n"
        "    spin(); os._exit(0)\n"
        "for k in kids: os.waitpid(k, 0)\n"
        "t = os.times()\n"
        "print((t.children_user + t.children_system) / (time.monotonic() - start))\n"
    )
    spec = task_spec("", resources={"cpu_cores": 1, "ram_gb": 0.5})
    spec["executors"] = [{"command": ["python3", "-c", burn]}]
    task = site.run("acme", spec)
    assert task["state"] == "COMPLETE", task
    cores_used = float(stdout(task).strip())
    assert 0 < cores_used <= 1.15, cores_used
