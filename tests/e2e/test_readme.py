"""The README's quick start and five-minute tour, read from README.md and run against a real
node, so the documentation cannot drift from the code.

Every ``sh`` block of the two sections is run command by command through bash (pipes and
redirections as a user would type them), in a scratch directory holding the tour's own
``task.yaml`` and a ``train.py``. A node with a local gateway plays ``make up``; a second
gateway declares an 8-card A100 pool for provider ``acme`` (run on this host), so the GPU,
price, budget and reservation commands have something to find. Placeholders (``cn-01K...``,
``<id>``) become the last task id printed. Lines after a ``$ `` command are its expected output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from nodeproc import Proc, admin_token, free_port, start_gateway, start_node

pytestmark = pytest.mark.slow

README = Path(__file__).parents[2] / "README.md"
SECTIONS = ("Quick start", "A five-minute tour")
# Commands the test cannot run here, and why; everything else in the two sections runs.
SKIPPED = {
    "make up": "the test starts the same node itself (`computenet up` on a free port)",
    "make test": "this is the test suite",
    ". .venv/bin/activate": "the test runs this venv's computenet",
    "computenet gateway": "another machine or a cluster: tests/e2e/test_real_backends.py",
    "computenet node --level regional": "a second node: tests/federation/",
    "computenet sim --trace ../shared/": "needs ../shared data and minutes of CPU; the "
    "synthetic run of the same command follows it",
    "computenet sim --topology national": "minutes of CPU at national scale: "
    "tests/sim/ runs the same engine on a small federation",
    "computenet settle": "needs a second node that owes this one: tests/federation/",
}
ID_PLACEHOLDER = re.compile(r"cn-01K[A-Z0-9]*\.\.\.|<id>")
TASK_ID = re.compile(r"^(cn-[0-9A-Z]{26})$", re.M)
PROGRESS = re.compile(r"^\s*[\d.]+s\s+([A-Z_]+)(?: on (\S+))?")


@dataclass
class Step:
    """One command of the README and what it says the command prints."""

    command: str
    expected: list[str] = field(default_factory=list)
    comment: str = ""


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def readme_blocks() -> tuple[list[Step], dict[str, str]]:
    """The steps of the sh blocks of both sections, in order, and the files they name
    (a yaml block whose first line is ``# NAME``)."""
    text = README.read_text()
    steps: list[Step] = []
    files: dict[str, str] = {}
    for title in SECTIONS:
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", _section(text, title), re.S):
            lines = body.rstrip("\n").splitlines()
            if lang == "yaml" and lines and lines[0].startswith("# "):
                files[lines[0][2:].strip()] = body
            if lang != "sh":
                continue
            prompted = any(line.startswith("$ ") for line in lines)
            for line in lines:
                if prompted and not line.startswith("$ "):
                    steps[-1].expected.append(line)
                    continue
                command, _, comment = line.removeprefix("$ ").partition("  # ")
                if " # " in command:  # a comment after a single space
                    command, _, comment = command.partition(" # ")
                if command.strip():
                    steps.append(Step(command.strip(), comment=comment.strip()))
    return steps, files


def skipped(command: str) -> str | None:
    """Why the test does not run ``command``, or None."""
    return next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    base = tmp_path_factory.mktemp("readme")
    port = free_port()
    node = start_node(base / "data", port, "--cpus", "2", up=True)
    url, token = f"http://127.0.0.1:{port}", admin_token(node)
    pool = {
        "label": "a100",
        "cpu_cores": 4,
        "memory_mib": 16384,
        "accelerator": {
            "vendor": "nvidia",
            "model": "nvidia-a100-sxm-80g",
            "memory_mib": 81920,
            "count": 8,
        },
        "region": {"code": "31"},
        "price_per_card_hour": "9",
        "price_per_core_hour": "50",  # CPU-only work prefers the free local pool
    }
    (base / "pools.json").write_text(json.dumps([pool]))
    gateway: Proc = start_gateway(
        url, token, base / "acme-gw", "acme", None, "--pools-file", str(base / "pools.json")
    )
    work = base / "work"
    work.mkdir()
    (work / "train.py").write_text("print('training done')\n")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "COMPUTENET_CONFIG": str(base / "client.json"),  # written by `up`, as in the README
        "HF_TOKEN": "hf_secret_for_the_tour",
        "COLUMNS": "200",
    }
    env.pop("COMPUTENET_URL", None)
    env.pop("COMPUTENET_TOKEN", None)
    try:
        deadline = time.monotonic() + 30
        while len(httpx.get(f"{url}/api/v1/pools", headers=_auth(token)).json()) < 2:
            assert time.monotonic() < deadline, gateway.output()
            time.sleep(0.2)
        yield work, env
    finally:
        gateway.stop()
        node.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _settle(env: dict[str, str], cwd: Path, task_id: str) -> None:
    """Wait until a task submitted without --wait has finished or knows why it waits, as a
    person typing the next command would have."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["computenet", "status", "--json", task_id],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            check=True,
        )
        task = json.loads(out.stdout)
        reason = task.get("reason") or ""
        terminal = task["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
        if terminal or (reason and "waiting for the scheduler" not in reason):
            return
        time.sleep(0.3)
    raise AssertionError(f"{task_id} neither ran nor said why it waits")


def test_the_readme_lists_few_commands_it_cannot_run() -> None:
    steps, files = readme_blocks()
    assert "task.yaml" in files
    assert len(steps) >= 30
    kept_out = [s.command for s in steps if skipped(s.command)]
    assert len(kept_out) <= 12, kept_out


def test_quick_start_and_tour_run_as_written(tour: tuple[Path, dict[str, str]]) -> None:
    work, env = tour
    steps, files = readme_blocks()
    for name, body in files.items():
        (work / name).write_text(body)
    last_id = ""
    for step in steps:
        if skipped(step.command):
            continue
        command = ID_PLACEHOLDER.sub(last_id, step.command)
        res = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=120,
            check=False,
        )
        where = f"README command `{step.command}`:\n{res.stdout}\n{res.stderr}"
        assert res.returncode == 0, where
        assert "Traceback" not in res.stderr, where
        found = TASK_ID.search(res.stdout)
        if step.command.startswith("computenet submit") and found:
            last_id = found.group(1)
            if "--wait" not in step.command:
                _settle(env, work, last_id)
        _check_output(step, res.stdout, where)


def _check_output(step: Step, stdout: str, where: str) -> None:
    """What the README shows: the printed lines after a ``$`` command (progress lines by
    their final state and pool), or a one-word comment such as ``# hello``."""
    expected = [e for e in step.expected if not ID_PLACEHOLDER.search(e)]
    progress = [m for e in expected if (m := PROGRESS.match(e))]
    if progress:
        state, pool = progress[-1].groups()
        needle = f"{state} on {pool}" if pool else state
        assert needle in stdout, where
    plain = [e for e in expected if not PROGRESS.match(e)]
    if plain:
        assert stdout.strip().splitlines()[-len(plain) :] == plain, where
    if step.comment and " " not in step.comment:
        assert stdout.strip() == step.comment, where
