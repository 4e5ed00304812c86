"""Must-show 3: a Snakemake workflow of four rules with dependencies runs to completion
through snakemake-executor-plugin-tes against a real node with a local gateway.

Files move through snakemake-storage-plugin-fs: a directory both Snakemake and the gateway's
host see (docs/workflows.md). Snakemake lives in its own venv (scripts/snakemake-venv.sh):
its TES plugin pins py-tes<0.5, ours needs 1.1. The plugin waits 40 s before its first status
check of each job, so this takes a minute or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend_testing import unavailable
from nodeproc import admin_token, free_port, start_node

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = """\
rule all:
    input: "results/summary.txt"

rule numbers:
    output: "data/numbers.txt"
    shell: "seq 1 10 > {output}"

rule squares:
    input: "data/numbers.txt"
    output: "data/squares.txt"
    shell: "awk '{{print $1*$1}}' {input} > {output}"

rule cubes:
    input: "data/numbers.txt"
    output: "data/cubes.txt"
    shell: "awk '{{print $1*$1*$1}}' {input} > {output}"

rule summary:
    input: n="data/numbers.txt", s="data/squares.txt", c="data/cubes.txt"
    output: "results/summary.txt"
    shell: "echo sum=$(paste -sd+ {input.n} | bc) squares=$(paste -sd+ {input.s} | bc) \
cubes=$(paste -sd+ {input.c} | bc) > {output}"
"""


def _snakemake_bin() -> Path:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "snakemake-venv.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        unavailable(f"Snakemake not available: {proc.stderr.strip().splitlines()[-1:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under /tmp: the runner binds the task's /tmp over the host's inside the task.
    path = REPO / ".tmp" / f"snakemake-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tasks_report(port: int, token: str) -> str:
    """Each TES task's state, system logs and executor output tails: why a job failed."""
    url = f"http://127.0.0.1:{port}/ga4gh/tes/v1/tasks?view=FULL"
    tasks = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    lines = []
    for task in tasks.get("tasks", []):
        lines.append(f"{task['id']} {task.get('name', '')}: {task['state']}")
        for log in task.get("logs", []):
            lines += [f"  system: {m}" for m in log.get("system_logs", [])]
            for ex in log.get("logs", []):
                lines.append(
                    f"  exit {ex.get('exit_code')}; stderr: {ex.get('stderr', '')[-1500:]}"
                )
    return "\n".join(lines)


def test_snakemake_workflow_runs_through_tes(base: Path) -> None:
    if REPO.is_relative_to("/tmp"):
        # Tasks see their own /tmp, so Snakemake's venv and the store would be invisible there.
        unavailable(
            f"the checkout {REPO} is under /tmp, which tasks cannot see (they get their own)"
        )
    bindir = _snakemake_bin()
    if shutil.which("bc") is None:
        pytest.skip("the workflow's summary rule needs bc")
    workflow = base / "workflow"
    workflow.mkdir()
    (workflow / "Snakefile").write_text(SNAKEFILE)
    store = base / "store"
    store.mkdir()
    port = free_port()
    path = f"{bindir}:{os.environ['PATH']}"  # the tasks' `python` and `pip` are Snakemake's
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", path)
        node = start_node(base / "node", port, "--cpus", "2", up=True)
    token = admin_token(node)
    try:
        run = subprocess.run(
            [
                str(bindir / "snakemake"),
                "--executor",
                "tes",
                "--tes-url",
                f"http://127.0.0.1:{port}/ga4gh/tes",
                "--tes-token",
                token,
                "--jobs",
                "2",
                "--default-storage-provider",
                "fs",
                "--default-storage-prefix",
                str(store),
            ],
            cwd=workflow,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PATH": path},
            check=False,
        )
        failed = "" if run.returncode == 0 else _tasks_report(port, token)
    finally:
        node.stop()
    assert run.returncode == 0, f"{run.stderr[-5000:]}\n--- the node's tasks ---\n{failed}"
    assert "5 of 5 steps (100%) done" in run.stderr
    assert run.stderr.count("[TES] Task submitted") == 4
    summary = (store / "results" / "summary.txt").read_text()
    assert summary == "sum=55 squares=385 cubes=3025\n"
