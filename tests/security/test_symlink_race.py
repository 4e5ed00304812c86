"""The gateway's collection of outputs and logs raced by a task swapping directories and files
for symlinks, for 30 seconds: it must never read or write outside the task's directory.

On the local backend none of a task's processes is alive while its outputs are collected
(bubblewrap's PID namespace and the task's cgroup are emptied first), so no real task can run
this race there; an attacker process running as the task's uid races the very functions the
runner calls (stage_outputs, TaskDir.write_from), as it could on a backend where the job's
processes outlive it (Slurm, Ray), thousands of times over.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_testing import unavailable
from computenet.gateway.beneath import TaskDir
from computenet.gateway.staging import StagingError, stage_outputs

RACE_S = float(os.environ.get("COMPUTENET_RACE_S", "30"))
TASK_UID = 61990  # in the gateway's default range, unused by the other tests' gateways
SECRET = b"TOP-SECRET root's file\n"

ATTACKER = r"""
import os, sys, time
work, secret_dir, secret, victim, until = sys.argv[1:6]
os.chdir(work)
end = float(until)
while time.time() < end:
    # The directory output: a real directory, then a symlink to root's directory.
    os.rename("d", "d_real"); os.symlink(secret_dir, "d")
    os.unlink("d"); os.rename("d_real", "d")
    # The file output: a regular file, then a symlink to root's secret.
    os.symlink(secret, "l"); os.rename("l", "out.txt")
    with open("f", "w") as f:
        f.write("safe\n")
    os.rename("f", "out.txt")
    # The stdout copy's target: a symlink to root's file, then a regular one.
    os.symlink(victim, "l"); os.rename("l", "log.txt")
    with open("f", "w") as f:
        f.write("mine\n")
    os.rename("f", "log.txt")
"""


@pytest.fixture
def arena() -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("the race needs root (the gateway's privilege) and a second uid")
    base = Path(tempfile.mkdtemp(prefix="cn-race-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_symlink_swaps_never_win_against_output_and_log_collection(arena: Path) -> None:
    secret_dir = arena / "secret"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "f.txt"  # same name as the task's own file, to be tempting
    secret.write_bytes(SECRET)
    victim = secret_dir / "victim.txt"
    victim.write_text("original\n")
    work = arena / "work"
    (work / "d").mkdir(parents=True)
    (work / "d" / "f.txt").write_text("task's own\n")
    (work / "out.txt").write_text("safe\n")
    (work / "log.txt").write_text("mine\n")
    for path in [work, *work.rglob("*")]:
        os.lchown(path, TASK_UID, TASK_UID)
    work.chmod(0o700)
    dest = arena / "dest"
    task = TaskDir(work, (TASK_UID, TASK_UID))
    bad = hashlib.sha256(SECRET).hexdigest()
    attacker = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={TASK_UID}",
            f"--regid={TASK_UID}",
            "--clear-groups",
            sys.executable,
            "-c",
            ATTACKER,
            str(work),
            str(secret_dir),
            str(secret),
            str(victim),
            str(time.time() + RACE_S),
        ],
        stderr=subprocess.PIPE,
    )
    outputs = [
        {"url": f"file://{dest}/tree", "path": "/d", "type": "DIRECTORY"},
        {"url": f"file://{dest}/glob", "path": "/d/*", "path_prefix": "/d"},
        {"url": f"file://{dest}/out.txt", "path": "/out.txt"},
    ]
    stored = refused = rounds = 0
    try:
        while attacker.poll() is None:
            rounds += 1
            for item in outputs:
                try:
                    files = stage_outputs(item, task)
                except StagingError:
                    refused += 1
                    continue
                stored += len(files)
                assert all(f.sha256 != bad for f in files), files
            try:
                task.write_from("/log.txt", io.BytesIO(b"executor's stdout\n"))
            except OSError:
                refused += 1
    finally:
        attacker.kill()
        attacker.wait()
    assert attacker.returncode in (0, -9), attacker.stderr.read() if attacker.stderr else ""
    assert victim.read_text() == "original\n" and secret.read_bytes() == SECRET
    assert victim.stat().st_uid == 0 and secret_dir.stat().st_uid == 0
    leaked = [p for p in dest.rglob("*") if p.is_file() and p.read_bytes() == SECRET]
    assert leaked == []
    # The race was real: the gateway saw both the task's files and the attacker's links.
    assert stored > 0 and refused > 0, (rounds, stored, refused)
