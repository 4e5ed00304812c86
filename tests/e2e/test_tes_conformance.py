"""Must-show 1: every TES 1.1 endpoint and field, through py-tes and raw HTTP, against a real
node with a local gateway; every response is validated against the spec's schemas."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tes

from nodeproc import Proc, admin_token, free_port, start_node
from tesschema import validate

pytestmark = pytest.mark.slow
TES = "/ga4gh/tes/v1"


@dataclass
class Node:
    client: tes.HTTPClient
    http: httpx.Client
    tmp: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("tesconf")
    port = free_port()
    # Its tasks stage from and to files under the test's directory: the operator opens it.
    opened = f"file://{base}/"
    proc: Proc = start_node(base / "data", port, "--cpus", "4", "--url-allow", opened, up=True)
    url = f"http://127.0.0.1:{port}"
    token = admin_token(proc)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url + TES, headers=headers, timeout=10) as http:
            yield Node(tes.HTTPClient(url, token=token, timeout=10), http, base)
    finally:
        proc.stop()


def _get(node: Node, path: str, schema: str, **params: Any) -> Any:
    if schema in ("tesTask", "tesListTasksResponse") and params.get("view", "MINIMAL") == "MINIMAL":
        schema += "Minimal"
    r = node.http.get(path, params=params)
    assert r.status_code == 200, r.text
    validate(schema, r.json())
    return r.json()


def _wait(node: Node, tid: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = _get(node, f"/tasks/{tid}", "tesTask", view="FULL")
        if task["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.2)


def test_service_info_announces_storage_and_backend_parameters(node: Node) -> None:
    info = _get(node, "/service-info", "tesServiceInfo")
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert {"file", "http", "https", "s3"} <= {s.split("://")[0] for s in info["storage"]}
    assert {"accelerator_count", "regions", "policy", "max_price_per_card_hour"} <= set(
        info["tesResources_backend_parameters"]
    )
    assert node.client.get_service_info().storage == info["storage"]


def test_every_task_field_round_trips_and_runs(node: Node) -> None:
    src = node.tmp / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "in.txt").write_text("from a file url\n")
    (src / "dir" / "sub" / "x.txt").write_text("x")
    dest = node.tmp / "dest"
    body = {
        "name": "every-field",
        "description": "drives each TES field",
        "inputs": [
            {"name": "c", "description": "inline", "path": "/w/c.txt", "content": "content\n"},
            {
                "url": f"file://{src}/in.txt",
                "path": "/w/in.txt",
                "type": "FILE",
                "streamable": True,
            },
            {"url": f"file://{src}/dir", "path": "/w/dir", "type": "DIRECTORY"},
        ],
        "outputs": [
            {
                "name": "o",
                "description": "all",
                "url": f"file://{dest}/all.txt",
                "path": "/w/all.txt",
            },
            {"url": f"file://{dest}/logs", "path": "/w/*.log", "path_prefix": "/w", "type": "FILE"},
            {"url": f"file://{dest}/tree", "path": "/w/dir", "type": "DIRECTORY"},
        ],
        "resources": {
            "cpu_cores": 1,
            "preemptible": True,
            "ram_gb": 0.5,
            "disk_gb": 1.0,
            "zones": ["cn-east"],
            "backend_parameters": {"time_limit_s": "60", "policy": "cheapest", "VmSize": "x"},
            "backend_parameters_strict": False,
        },
        "executors": [
            {
                "image": "alpine",
                "command": ["sh", "-c", 'cat c.txt in.txt dir/sub/x.txt; echo "$GREETING"; cat'],
                "workdir": "/w",
                "stdin": "/w/c.txt",
                "stdout": "/w/all.txt",
                "stderr": "/w/err.log",
                "env": {"GREETING": "hello env"},
            },
            {"image": "alpine", "command": ["sh", "-c", "exit 3"], "ignore_error": True},
            {"image": "alpine", "command": ["sh", "-c", "pwd >&2"], "workdir": "/vol"},
        ],
        "volumes": ["/vol"],
        "tags": {"project": "conformance", "kind": "every-field"},
    }
    r = node.http.post("/tasks", json=body)
    assert r.status_code == 200, r.text
    validate("tesCreateTaskResponse", r.json())
    tid = r.json()["id"]
    task = _wait(node, tid)
    assert task["state"] == "COMPLETE", json.dumps(task["logs"])
    for key in ("name", "description", "volumes", "tags"):
        assert task[key] == body[key], key
    assert task["executors"] == [{"env": {}, "ignore_error": False, **e} for e in body["executors"]]
    assert task["inputs"][0]["content"] == "content\n"
    assert task["inputs"][1]["streamable"] is True
    assert task["outputs"][1]["path_prefix"] == "/w"
    res = task["resources"]
    assert res["preemptible"] is True and res["zones"] == ["cn-east"] and res["disk_gb"] == 1.0
    # Unsupported keys are dropped when not strict (TES: not stored, not returned).
    assert res["backend_parameters"] == {"time_limit_s": "60", "policy": "cheapest"}
    log = task["logs"][-1]
    stdout = "content\nfrom a file url\nxhello env\ncontent\n"
    assert log["logs"][0]["stdout"] == stdout and log["logs"][0]["exit_code"] == 0
    assert log["logs"][1]["exit_code"] == 3  # ignore_error: the task still completes
    assert log["logs"][2]["stderr"].rstrip().endswith("/vol")  # the volume exists
    assert (dest / "all.txt").read_text() == stdout
    assert (dest / "tree" / "sub" / "x.txt").read_text() == "x"
    assert (dest / "logs" / "err.log").exists()
    files = {o["path"]: o for o in log["outputs"]}
    assert set(files) == {"/w/all.txt", "/w/err.log", "/w/dir/sub/x.txt"}
    assert files["/w/all.txt"]["size_bytes"] == str(len(stdout))
    sha = hashlib.sha256(stdout.encode()).hexdigest()
    assert log["metadata"]["sha256:/w/all.txt"] == sha
    assert any("local backend" in line for line in log["system_logs"])
    # ... but said, as TES asks: a warning in the system logs.
    assert any("unsupported backend_parameters ignored: VmSize" in s for s in log["system_logs"])
    # The same task through py-tes: every view parses into its models.
    for view in ("MINIMAL", "BASIC", "FULL"):
        got = node.client.get_task(tid, view=view)
        assert got.id == tid and got.state == "COMPLETE"
    basic = _get(node, f"/tasks/{tid}", "tesTask", view="BASIC")
    assert "content" not in basic["inputs"][0]
    assert "stdout" not in basic["logs"][-1]["logs"][0]
    assert "system_logs" not in basic["logs"][-1]
    assert _get(node, f"/tasks/{tid}", "tesTask") == {"id": tid, "state": "COMPLETE"}


def test_backend_parameters_strict_refuses_unknown_keys(node: Node) -> None:
    body = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True},
    }
    r = node.http.post("/tasks", json=body)
    assert r.status_code == 400 and "VmSize" in r.json()["message"]
    ok = {
        **body,
        "resources": {"backend_parameters": {"REGIONS": "31"}, "backend_parameters_strict": True},
    }
    r = node.http.post("/tasks", json=ok)
    assert r.status_code == 200, r.text  # keys are case-insensitive


def test_executor_error_and_py_tes_create(node: Node) -> None:
    task = tes.Task(
        name="fails",
        executors=[tes.Executor(image="alpine", command=["sh", "-c", "echo no >&2; exit 5"])],
    )
    tid = node.client.create_task(task)
    node.client.wait(tid, timeout=60)
    full = _wait(node, tid)
    assert full["state"] == "EXECUTOR_ERROR"
    assert full["logs"][-1]["logs"][0]["stderr"] == "no\n"
    assert full["logs"][-1]["logs"][0]["exit_code"] == 5


def test_list_filters_views_and_pages(node: Node) -> None:
    ids = []
    for i in range(5):
        body = {
            "name": f"listme-{i}",
            "executors": [{"image": "alpine", "command": ["true"]}],
            "tags": {"batch": "b1", "parity": "even" if i % 2 == 0 else "odd"},
        }
        ids.append(node.http.post("/tasks", json=body).json()["id"])
    for tid in ids:
        _wait(node, tid)
    page = _get(node, "/tasks", "tesListTasksResponse", name_prefix="listme-", view="BASIC")
    assert {t["id"] for t in page["tasks"]} == set(ids)
    assert all(t["name"].startswith("listme-") for t in page["tasks"])
    even = _get(node, "/tasks", "tesListTasksResponse", tag_key="parity", tag_value="even")
    assert {t["id"] for t in even["tasks"]} == {ids[0], ids[2], ids[4]}
    both = node.http.get(
        "/tasks",
        params=[
            ("tag_key", "batch"),
            ("tag_value", "b1"),
            ("tag_key", "parity"),
            ("tag_value", "odd"),
        ],
    ).json()
    assert {t["id"] for t in both["tasks"]} == {ids[1], ids[3]}
    any_value = _get(node, "/tasks", "tesListTasksResponse", tag_key="batch")
    assert set(ids) <= {t["id"] for t in any_value["tasks"]}
    done = _get(node, "/tasks", "tesListTasksResponse", state="COMPLETE", name_prefix="listme-")
    assert {t["id"] for t in done["tasks"]} == set(ids)
    none = _get(node, "/tasks", "tesListTasksResponse", state="RUNNING", name_prefix="listme-")
    assert none["tasks"] == []
    full = _get(node, "/tasks", "tesListTasksResponse", view="FULL", name_prefix="listme-")
    assert all("logs" in t for t in full["tasks"])
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 2, "name_prefix": "listme-"}
        if token:
            params["page_token"] = token
        page = _get(node, "/tasks", "tesListTasksResponse", **params)
        seen += [t["id"] for t in page["tasks"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    via_client = node.client.list_tasks(view="MINIMAL", page_size=2)
    assert len(via_client.tasks) == 2 and via_client.next_page_token


def test_cancel_semantics(node: Node) -> None:
    tid = node.http.post(
        "/tasks", json={"executors": [{"image": "alpine", "command": ["sleep", "300"]}]}
    ).json()["id"]
    r = node.http.post(f"/tasks/{tid}:cancel")
    assert r.status_code == 200
    validate("tesCancelTaskResponse", r.json())
    assert _wait(node, tid)["state"] == "CANCELED"
    assert node.http.post(f"/tasks/{tid}:cancel").status_code == 200  # again: harmless
    done = node.client.create_task(tes.Task(executors=[tes.Executor(image="a", command=["true"])]))
    assert _wait(node, done)["state"] == "COMPLETE"
    r = node.http.post(f"/tasks/{done}:cancel")
    assert r.status_code == 409 and "already finished" in r.json()["message"]
    missing = node.http.post("/tasks/cn-00000000000000000000000000:cancel")
    assert missing.status_code == 404
