"""What isolating a task adds to its start: p50/p99 of running ``true`` on the host as the
runner does without a sandbox, and with the sandbox as the runner does it (a fresh cgroup
with its limits, bubblewrap as a uid of its own held until the runner has put it in the
cgroup and set its rlimits, then the cgroup emptied and removed), the same with the rlimits
and cgroup set in a Python ``preexec_fn`` (the way before), and in podman.

Run as root: ``.venv/bin/python bench/isolation.py [--runs 200] [--podman-runs 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from computenet.gateway.backends.bwrap import TASK_PATH, SandboxGate, bwrap_command
from computenet.gateway.backends.cgroups import TaskCgroup, limits_for
from computenet.gateway.backends.containers import container_command
from computenet.gateway.backends.sandbox import (
    TASK_MAX_PIDS,
    TaskSandbox,
    limits,
    rlimits,
    set_rlimits,
)

UID = 61998
RESOURCES = {"cpu_cores": 1, "ram_gb": 1}
IMAGE = "localhost/computenet-busybox:1"


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p99_ms": round(p99, 2)}


def _time(run: Callable[[int], None], runs: int) -> list[float]:
    out = []
    for i in range(runs):
        start = time.perf_counter()
        run(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _interleaved(runs: list[Callable[[int], None]], n: int) -> list[list[float]]:
    out: list[list[float]] = [[] for _ in runs]
    for i in range(n):
        for samples, run in zip(out, runs, strict=True):
            start = time.perf_counter()
            run(i)
            samples.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    """Measure and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--podman-runs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/isolation.py: run as root (the sandbox switches users)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="cn-bench-iso-"))
    work = base / "work"
    work.mkdir()
    os.chown(work, UID, UID)
    env = {"PATH": TASK_PATH, "HOME": str(work)}
    box = TaskSandbox(UID, UID, base)

    def plain(_i: int) -> None:
        subprocess.run(["true"], env=env, cwd=work, preexec_fn=limits(RESOURCES), check=True)

    def sandboxed(i: int) -> None:
        # As the runner does: bwrap holds the sandbox (SandboxGate) while the runner puts it
        # in the task's cgroup and sets its rlimits from outside, then lets it run.
        cgroup = TaskCgroup(f"bench-{os.getpid()}-{i}")
        cgroup.create(limits_for(RESOURCES, TASK_MAX_PIDS))
        gate = SandboxGate()
        argv = bwrap_command(
            ["true"],
            work=work,
            roots=[],
            chdir=str(work),
            uid=UID,
            gid=UID,
            info_fd=gate.info_w,
            block_fd=gate.block_r,
        )
        proc = subprocess.Popen(argv, env=env, cwd=work, pass_fds=gate.child_fds())
        pid = gate.sandbox_pid()
        cgroup.add(pid)
        set_rlimits(pid, rlimits(RESOURCES, TASK_MAX_PIDS))
        gate.release()
        assert proc.wait() == 0
        cgroup.kill()
        cgroup.remove()

    def preexec(i: int) -> None:
        # The way before: rlimits and cgroup joined in a Python preexec_fn (fork, not vfork).
        cgroup = TaskCgroup(f"bench-{os.getpid()}-p{i}")
        cgroup.create(limits_for(RESOURCES, TASK_MAX_PIDS))
        argv = bwrap_command(["true"], work=work, roots=[], chdir=str(work), uid=UID, gid=UID)
        subprocess.run(
            argv,
            env=env,
            cwd=work,
            preexec_fn=limits(RESOURCES, TASK_MAX_PIDS, cgroup.join),
            check=True,
        )
        cgroup.kill()
        cgroup.remove()

    def podman(_i: int) -> None:
        argv = container_command(
            "podman", IMAGE, ["true"], work, [], None, {}, box, limits_for(RESOURCES, 512)
        )
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=True)

    try:
        # Interleaved, so that the machine's load (shared, noisy) weighs on each alike.
        plain_ms, sandbox_ms, preexec_ms = _interleaved([plain, sandboxed, preexec], args.runs)
        report: dict[str, object] = {
            "runs": args.runs,
            "load_avg_1m": os.getloadavg()[0],
            "host": _percentiles(plain_ms),
            "sandbox": _percentiles(sandbox_ms),
            "sandbox_preexec": _percentiles(preexec_ms),
            "added_p50_ms": round(statistics.median(sandbox_ms) - statistics.median(plain_ms), 2),
            "cpus": os.cpu_count(),
        }
        have_image = shutil.which("podman") and (
            subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode == 0
        )
        if have_image and args.podman_runs:
            report["podman"] = _percentiles(_time(podman, args.podman_runs))
            report["podman_runs"] = args.podman_runs
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
