"""Task secrets end to end: stored encrypted, injected at run time, never in a log, an API
answer, the job's files or the node's store in clear (issue 9)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from nodeproc import admin_token, cli, free_port, start_node

pytestmark = pytest.mark.slow
VALUE = "hf_s3cr3t-Zq9+/=value"


def test_a_secret_reaches_the_task_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port, "--cpus", "1", up=True)
    try:
        env = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": admin_token(node), "HF": VALUE}
        stored = cli("secret", "set", "hf-token", "--from-env", "HF", env=env)
        assert stored.returncode == 0, stored.stderr
        listed = cli("secret", "list", "--json", env=env)
        assert json.loads(listed.stdout)[0]["name"] == "hf-token" and VALUE not in listed.stdout

        digest = hashlib.sha256(VALUE.encode()).hexdigest()  # the value itself must not
        script = (  # appear in the task, which the API shows
            f'test "$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-64)" = {digest} '
            "&& echo injected; "
            'echo "token=$HF_TOKEN"; echo "$HF_TOKEN" >&2; printf %s "$HF_TOKEN" | rev'
        )
        done = cli(
            "submit",
            "--json",
            "--secret",
            "HF_TOKEN=hf-token",
            "--",
            "sh",
            "-c",
            script,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        tid = json.loads(done.stdout)["id"]
        auth = {"Authorization": f"Bearer {env['COMPUTENET_TOKEN']}"}
        deadline = time.monotonic() + 60
        while (task := httpx.get(f"{url}/api/v1/tasks/{tid}", headers=auth).json())[
            "state"
        ] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
            assert time.monotonic() < deadline, task
            time.sleep(0.2)
        assert task["state"] == "COMPLETE"
        ex = task["attempts"][0]["executors"][0]
        stars = "*" * len(VALUE)
        assert ex["stdout"].splitlines()[:2] == ["injected", f"token={stars}"]
        assert ex["stderr"] == stars + "\n"
        assert task["spec"]["secrets"] == {"HF_TOKEN": "hf-token"}  # the name, not the value

        answers = [
            httpx.get(f"{url}{path}", headers=auth).text
            for path in (
                f"/api/v1/tasks/{task['id']}",
                f"/ga4gh/tes/v1/tasks/{task['id']}?view=FULL",
                "/api/v1/tasks?view=FULL",
                "/api/v1/secrets",
                "/api/v1/audit?format=jsonl",
            )
        ]
        leaks = [a[max(0, a.find(VALUE) - 200) : a.find(VALUE) + 50] for a in answers if VALUE in a]
        assert not leaks, leaks

        missing = cli("submit", "--secret", "X=nope", "--", "true", env=env)
        assert missing.returncode != 0 and "no secret named 'nope'" in missing.stderr
        deleted = cli("secret", "delete", "hf-token", env=env)
        assert deleted.returncode == 0
    finally:
        node.stop()
    # Nothing in clear anywhere the node or its gateway wrote.
    for path in (tmp_path / "node").rglob("*"):
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path
    assert VALUE not in node.output()
    with sqlite3.connect(tmp_path / "node" / "computenet.db") as db:
        assert db.execute("SELECT count(*) FROM secrets").fetchone()[0] == 0
