"""The example service's payload runs where a replica runs: as a task on the local backend, in
bubblewrap, as a uid of its own, with no network and only the host's system python3."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend_testing import unavailable
from computenet.gateway.backends.bwrap import bwrap_path
from nodeproc import admin_token, free_port, start_node
from tinylmproc import tinylm_service

TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    # Under /tmp, not pytest's tmp_path: the task's own uid must reach its directory.
    path = Path(tempfile.mkdtemp(prefix="cn-tinylm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's own task uids need root")
def test_the_service_file_payload_trains_and_answers_inside_the_sandbox(
    tmp_path: Path, sandbox_dir: Path
) -> None:
    if bwrap_path() is None:
        unavailable("bubblewrap (bwrap) is not installed: scripts/isolation-up.sh installs it")
    service = tinylm_service()
    # The service's own command and inputs, plus --check: train, answer one completion of its
    # own over HTTP on the sandbox's loopback, print it and exit (a task must end).
    command = [*service["executor"]["command"], "--check", "--port", "8080"]
    spec = {
        "name": "tinylm-check",
        "executors": [{"command": command}],
        "inputs": service["inputs"],
        "resources": service["resources"],
    }
    port = free_port()
    node = start_node(
        tmp_path / "node",
        port,
        "--cpus",
        "1",
        "--sandbox-dir",
        str(sandbox_dir),
        up=True,
        env={"COMPUTENET_RUN_AS": ""},  # the default: an unprivileged uid of its own
    )
    try:
        auth = {"Authorization": f"Bearer {admin_token(node)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=10) as http:
            resp = http.post("/api/v1/tasks", json=spec)
            assert resp.status_code in (200, 201), resp.text
            tid = resp.json()["id"]
            deadline = time.monotonic() + 60
            while (task := http.get(f"/api/v1/tasks/{tid}").json())["state"] not in TERMINAL:
                assert time.monotonic() < deadline, task
                time.sleep(0.2)
        ran = task["attempts"][0]["executors"][0]
        assert task["state"] == "COMPLETE", ran["stderr"]
        answer = json.loads(ran["stdout"])
        assert answer["object"] == "text_completion" and answer["choices"][0]["text"]
        assert answer["usage"]["completion_tokens"] == 12
        assert "tinylm: trained on" in ran["stderr"]
    finally:
        node.stop()
