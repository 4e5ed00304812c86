"""The TES backend: state mapping and errors against a fake TES server on loopback, then
real runs against a second ComputeNet node's TES API (the upstream of ``backend_tes``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend_tes import backend_under_test
from computenet.gateway.backends.base import (
    BackendAuthError,
    BackendDown,
    BackendError,
    Capability,
    CapacityUnavailable,
    Job,
    JobStatus,
)
from computenet.gateway.backends.tes import TesBackend
from computenet.model.pool import Accelerator, PoolSpec, Region
from computenet.model.task import TaskSpec, TaskState
from nodeproc import free_port, pids_matching

PREFIX = "/ga4gh/tes/v1"
POOL = PoolSpec(label="tes", cpu_cores=4, memory_mib=4096)
GPU_POOL = PoolSpec(
    label="gpu",
    cpu_cores=8,
    memory_mib=65536,
    accelerator=Accelerator(vendor="nvidia", model="nvidia-h100-sxm", memory_mib=81559, count=2),
)
OURS = ["accelerator_count", "accelerator_model", "time_limit_s"]


# ---- a fake TES 1.1 server ----------------------------------------------------------------


@dataclass
class FakeTes:
    """What the fake server holds and what it was asked."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # "METHOD /path-prefix" -> HTTP status
    backend_parameters: list[str] = field(default_factory=list)
    cancel_status: int = 200

    def count(self, method: str, path: str = "") -> int:
        return sum(1 for m, p, _, _ in self.requests if m == method and p.startswith(path))


def _handler(fake: FakeTes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path, _, query = self.path.partition("?")
            fake.requests.append(
                (method, path + ("?" + query if query else ""), dict(self.headers), body)
            )
            for rule, code in fake.fail.items():
                m, p = rule.split(" ", 1)
                if m == method and path.startswith(PREFIX + p):
                    return self._send(code, {"message": f"injected {code}"})
            route = path.removeprefix(PREFIX)
            if method == "GET" and route == "/service-info":
                return self._send(
                    200, {"id": "fake", "tesResources_backend_parameters": fake.backend_parameters}
                )
            if method == "GET" and route == "/tasks":
                return self._send(200, {"tasks": []})
            if method == "POST" and route == "/tasks":
                tid = f"fake-{len(fake.tasks) + 1}"
                fake.tasks[tid] = {"id": tid, "state": "QUEUED", "logs": []}
                return self._send(200, {"id": tid})
            if route.startswith("/tasks/"):
                tid, _, action = route.removeprefix("/tasks/").partition(":")
                task = fake.tasks.get(tid)
                if task is None:
                    return self._send(404, {"message": "no such task"})
                if method == "POST" and action == "cancel":
                    return self._send(fake.cancel_status, {})
                if method == "GET":
                    view = "FULL" if "view=FULL" in query else "BASIC"
                    return self._send(200, _view(task, view))
            return self._send(404, {"message": "no route"})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


def _view(task: dict[str, Any], view: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(task))
    if view != "FULL":
        for entry in out.get("logs", []):
            entry.pop("system_logs", None)
            for ex in entry.get("logs", []):
                ex.pop("stdout", None)
                ex.pop("stderr", None)
    return out


@pytest.fixture
def fake() -> Iterator[tuple[FakeTes, str]]:
    state = FakeTes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _job(spec: dict[str, Any] | None = None, n: int = 1) -> Job:
    spec = spec or {"executors": [{"command": ["echo", "hi"]}]}
    return Job(f"cn-T{n}", 1, f"lease{n}", "cn/acme/tes", TaskSpec.model_validate(spec))


def _backend(tmp_path: Path, url: str, **kw: Any) -> TesBackend:
    kw.setdefault("pool", POOL)
    return TesBackend(tmp_path / "gw", url=url, token="secret", **kw)


# ---- state mapping --------------------------------------------------------------------------

STATES = [
    ("QUEUED", TaskState.INITIALIZING, ""),
    ("INITIALIZING", TaskState.INITIALIZING, ""),
    ("RUNNING", TaskState.RUNNING, ""),
    ("PAUSED", TaskState.RUNNING, ""),
    ("CANCELING", TaskState.RUNNING, ""),
    ("COMPLETE", TaskState.COMPLETE, ""),
    ("EXECUTOR_ERROR", TaskState.EXECUTOR_ERROR, "remote executor error"),
    ("SYSTEM_ERROR", TaskState.SYSTEM_ERROR, "remote system error"),
    ("PREEMPTED", TaskState.SYSTEM_ERROR, "remote preempted"),
    ("CANCELED", TaskState.CANCELED, "remote canceled"),
]


@pytest.mark.parametrize(("remote", "ours", "message"), STATES)
def test_remote_states_map_to_ours(
    fake: tuple[FakeTes, str], tmp_path: Path, remote: str, ours: TaskState, message: str
) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    state.tasks["fake-1"].update(
        state=remote, logs=[{"logs": [], "system_logs": ["2026-01-01T00:00:00Z disk full"]}]
    )
    status = backend.status(job)
    assert status.state is ours
    assert message in status.message
    if message:
        assert "disk full" in status.message and "2026-01-01" not in status.message


def test_unknown_keeps_the_last_known_state(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    state.tasks["fake-1"]["state"] = "UNKNOWN"
    assert backend.status(job).state is TaskState.INITIALIZING
    state.tasks["fake-1"]["state"] = "RUNNING"
    assert backend.status(job).state is TaskState.RUNNING
    state.tasks["fake-1"]["state"] = "UNKNOWN"
    status = backend.status(job)
    assert status.state is TaskState.RUNNING
    assert "UNKNOWN" in status.message


def test_executor_statuses_and_wall_time(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    state.tasks["fake-1"].update(
        state="EXECUTOR_ERROR",
        logs=[
            {"logs": [{"exit_code": 0}], "start_time": "2026-01-01T00:00:00Z"},  # attempt 1
            {
                "start_time": "2026-01-01T10:00:00+00:00",
                "end_time": "2026-01-01T10:00:12.5+00:00",
                "logs": [
                    {
                        "start_time": "2026-01-01T10:00:01+00:00",
                        "end_time": "2026-01-01T10:00:02+00:00",
                        "exit_code": 0,
                    },
                    {"start_time": "2026-01-01T10:00:02+00:00", "exit_code": 3},
                ],
            },
        ],
    )
    status = backend.status(job)
    assert [e.exit_code for e in status.executors] == [0, 3]
    assert status.executors[0].end_time is not None
    assert status.executors[1].end_time is None
    assert str(status.wall_s) == "12.5"


def test_remote_task_gone_is_a_system_error(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    del state.tasks["fake-1"]
    status = backend.status(job)
    assert status.state is TaskState.SYSTEM_ERROR
    assert "gone" in status.message


# ---- errors -----------------------------------------------------------------------------------

ERRORS = [
    (401, BackendAuthError),
    (403, BackendAuthError),
    (500, BackendDown),
    (503, BackendDown),
    (429, CapacityUnavailable),
]


@pytest.mark.parametrize(("code", "error"), ERRORS)
def test_http_errors_raise_backend_errors(
    fake: tuple[FakeTes, str], tmp_path: Path, code: int, error: type[BackendError]
) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    done = _job(n=2)
    backend.submit(done)
    state.fail = {"GET /": code, "POST /": code}
    with pytest.raises(error):
        backend.check()
    with pytest.raises(error):
        backend.submit(_job())
    with pytest.raises(error):
        backend.status(done)
    assert not (tmp_path / "gw" / "jobs" / _job().key).exists()


def test_a_refused_task_fails_the_attempt_not_the_backend(
    fake: tuple[FakeTes, str], tmp_path: Path
) -> None:
    state, url = fake
    state.fail = {"POST /tasks": 400}
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    backend.submit(job)
    assert state.count("POST") == 1
    status = backend.status(job)
    assert status.state is TaskState.SYSTEM_ERROR
    assert "refused the task: HTTP 400 injected 400" in status.message
    assert backend.read_log(job, 0, "stdout", 0, 10) == b""
    backend.cancel(job)
    assert backend.recover() == [job]
    backend.forget(job)
    assert state.count("POST") == 1


def test_no_tes_api_at_the_url_is_backend_down(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    state.fail = {"POST /tasks": 404}
    with pytest.raises(BackendDown):
        _backend(tmp_path, url).submit(_job())


def test_connection_refused_is_backend_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = _backend(tmp_path, url, timeout_s=2)
    with pytest.raises(BackendDown):
        backend.check()
    with pytest.raises(BackendDown):
        backend.submit(_job())
    reasons = backend.unsupported()
    assert "service-info failed" in reasons[Capability.TIME_LIMIT]


# ---- submit ----------------------------------------------------------------------------------


def test_submit_maps_the_task_and_extensions(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    state.backend_parameters = OURS
    backend = _backend(tmp_path, url, pool=GPU_POOL, backend_parameters={"pool": "up/x/y"})
    spec = {
        "name": "train",
        "executors": [
            {"command": ["sh", "-c", "cat"], "workdir": "/data", "stdin": "in.txt"},
            {"image": "python:3.11", "command": ["true"], "env": {"A": "1"}, "ignore_error": True},
        ],
        "resources": {
            "cpu_cores": 2,
            "ram_gb": 3.5,
            "disk_gb": 10,
            "preemptible": True,
            "zones": ["z1"],
            "time_limit_s": 60,
            "accelerator": {"count": 2, "model": "nvidia-h100-sxm"},
            "backend_parameters": {"regions": "31"},
        },
        "placement": {"regions": ["31"], "priority": 5},
        "tags": {"team": "a"},
    }
    job = _job(spec)
    backend.submit(job)
    _method, path, headers, body = next(r for r in state.requests if r[0] == "POST")
    assert path == f"{PREFIX}/tasks"
    assert headers["Idempotency-Key"] == f"computenet-{backend.client_id}-cn-T1.1"
    assert headers["Authorization"] == "Bearer secret"
    ex0, ex1 = body["executors"]
    assert ex0 == {
        "image": "alpine",
        "command": ["sh", "-c", "cat"],
        "workdir": "/data",
        "stdin": "in.txt",
        "env": {},
        "ignore_error": False,
    }
    assert ex1["image"] == "python:3.11" and ex1["env"] == {"A": "1"} and ex1["ignore_error"]
    assert body["resources"] == {
        "cpu_cores": 2,
        "ram_gb": 3.5,
        "disk_gb": 10,
        "preemptible": True,
        "zones": ["z1"],
        "backend_parameters": {
            "pool": "up/x/y",  # the operator's, pinning a pool of the remote
            "accelerator_count": "2",
            "accelerator_model": "nvidia-h100-sxm",
            "time_limit_s": "60",
        },
    }
    assert body["tags"] == {"team": "a", "computenet.task_id": "cn-T1", "computenet.attempt": "1"}
    assert body["name"] == "train"
    assert "placement" not in body
    saved = json.loads((tmp_path / "gw" / "jobs" / job.key / "remote.json").read_text())
    assert saved["remote_id"] == "fake-1"


def test_submit_is_idempotent_and_recoverable(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    backend.submit(job)
    again = _backend(tmp_path, url)
    again.submit(job)
    assert state.count("POST", f"{PREFIX}/tasks") == 1
    assert again.recover() == [job]
    state.tasks["fake-1"]["state"] = "RUNNING"
    assert again.status(job).state is TaskState.RUNNING
    state.tasks["fake-1"]["state"] = "COMPLETE"
    assert again.status(job).state is TaskState.COMPLETE
    again.forget(job)
    assert state.count("POST", f"{PREFIX}/tasks/fake-1:cancel") == 0  # known final: no cancel
    assert again.recover() == []


def test_a_gpu_job_is_refused_where_the_remote_cannot_honour_it(
    fake: tuple[FakeTes, str], tmp_path: Path
) -> None:
    state, url = fake
    backend = _backend(tmp_path, url, pool=GPU_POOL)
    assert Capability.GPUS in backend.unsupported()
    with pytest.raises(CapacityUnavailable):
        backend.submit(
            _job({"executors": [{"command": ["true"]}], "resources": {"accelerator": {}}})
        )
    assert state.count("POST") == 0


def test_unsupported_follows_service_info(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    plain = _backend(tmp_path, url).unsupported()
    assert set(plain) == {
        Capability.GPUS,
        Capability.TIME_LIMIT,
        Capability.FULL_LOGS,
        Capability.SERVICES,
    }
    assert "no accelerators" in plain[Capability.GPUS]
    assert "time_limit_s" in plain[Capability.TIME_LIMIT]
    state.backend_parameters = OURS
    with_gpus = _backend(tmp_path, url, pool=GPU_POOL).unsupported()
    assert set(with_gpus) == {Capability.FULL_LOGS, Capability.SERVICES}


def test_pools_and_url_forms(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    default = TesBackend(tmp_path / "a", url=url + "/", label="remote1")
    (pool,) = default.pools()
    assert (pool.label, pool.backend, pool.cpu_cores, pool.memory_mib) == (
        "remote1",
        "tes",
        1,
        1024,
    )
    given = TesBackend(tmp_path / "b", url=url + PREFIX, pool=GPU_POOL, region=Region(code="31"))
    (pool,) = given.pools()
    assert (pool.label, pool.backend, pool.region.code) == ("gpu", "tes", "31")
    given.check()
    default.check()
    assert state.count("GET", f"{PREFIX}/service-info") == 2
    assert "Authorization" not in state.requests[0][2]


# ---- logs, cancel, forget --------------------------------------------------------------------


def test_read_log_serves_the_full_view_by_byte_offset(
    fake: tuple[FakeTes, str], tmp_path: Path
) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    text = "héllo wörld ✓\n"
    state.tasks["fake-1"].update(
        state="RUNNING", logs=[{"logs": [{"stdout": text, "stderr": "e"}]}]
    )
    data = text.encode()
    assert backend.read_log(job, 0, "stdout", 0, 3) == data[:3]
    assert backend.read_log(job, 0, "stdout", 3, 1 << 20) == data[3:]
    assert backend.read_log(job, 0, "stderr", 0, 10) == b"e"
    assert backend.read_log(job, 1, "stdout", 0, 10) == b""
    assert backend.read_log(job, 0, "bogus", 0, 10) == b""
    assert state.count("GET", f"{PREFIX}/tasks/fake-1") == 1  # one FULL fetch, cached
    time.sleep(0.6)
    backend.read_log(job, 0, "stdout", 0, 1)
    assert state.count("GET", f"{PREFIX}/tasks/fake-1") == 2


def test_final_status_refreshes_logs_cached_while_running(
    fake: tuple[FakeTes, str], tmp_path: Path
) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    task = state.tasks["fake-1"]
    task.update(state="RUNNING", logs=[{"logs": [{"stdout": "a"}]}])
    assert backend.read_log(job, 0, "stdout", 0, 10) == b"a"
    task.update(state="COMPLETE", logs=[{"logs": [{"stdout": "ab", "exit_code": 0}]}])
    assert backend.status(job).state is TaskState.COMPLETE
    assert backend.read_log(job, 0, "stdout", 1, 10) == b"b"  # not the stale "a"
    before = len(state.requests)
    time.sleep(0.6)
    assert backend.status(job).state is TaskState.COMPLETE
    assert backend.read_log(job, 0, "stdout", 0, 10) == b"ab"
    assert len(state.requests) == before  # final: served from memory


@pytest.mark.parametrize("code", [200, 400, 404, 409])
def test_cancel_is_idempotent(fake: tuple[FakeTes, str], tmp_path: Path, code: int) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    backend.cancel(_job(n=9))  # never submitted: nothing to do
    assert state.count("POST") == 0
    job = _job()
    backend.submit(job)
    state.cancel_status = code
    backend.cancel(job)
    backend.cancel(job)
    assert state.count("POST", f"{PREFIX}/tasks/fake-1:cancel") == 2


def test_forget_cancels_an_unfinished_task(fake: tuple[FakeTes, str], tmp_path: Path) -> None:
    state, url = fake
    backend = _backend(tmp_path, url)
    job = _job()
    backend.submit(job)
    backend.forget(job)
    assert state.count("POST", f"{PREFIX}/tasks/fake-1:cancel") == 1
    assert not (tmp_path / "gw" / "jobs" / job.key).exists()
    state.fail = {"POST /": 503}
    backend.forget(job)  # already gone, remote down: still fine


# ---- against a real upstream ComputeNet node ------------------------------------------------


def _wait(backend: TesBackend, job: Job, timeout_s: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = backend.status(job)
        if status.state.terminal:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[TesBackend]:
    with backend_under_test(tmp_path) as but:
        assert isinstance(but.backend, TesBackend)
        yield but.backend


@pytest.mark.slow
def test_upstream_runs_executors_in_order(upstream: TesBackend) -> None:
    upstream.check()
    assert Capability.TIME_LIMIT not in upstream.unsupported()
    job = _job(
        {
            "executors": [
                {
                    "command": ["sh", "-c", "echo one > f.txt; echo $GREETING"],
                    "workdir": "/w",
                    "env": {"GREETING": "hi"},
                },
                {
                    "command": ["sh", "-c", "cat f.txt; exit 3"],
                    "workdir": "/w",
                    "ignore_error": True,
                },
                {"command": ["sh", "-c", "echo oops >&2; exit 4"]},
                {"command": ["echo", "never"]},
            ]
        }
    )
    upstream.submit(job)
    status = _wait(upstream, job)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert "executor 2 exited with code 4" in status.message
    assert [e.exit_code for e in status.executors] == [0, 3, 4]
    assert upstream.read_log(job, 0, "stdout", 0, 100) == b"hi\n"
    assert upstream.read_log(job, 1, "stdout", 0, 100) == b"one\n"
    assert upstream.read_log(job, 2, "stderr", 0, 100) == b"oops\n"
    assert status.wall_s > 0


@pytest.mark.slow
def test_upstream_enforces_the_time_limit(upstream: TesBackend) -> None:
    job = _job({"executors": [{"command": ["sleep", "30"]}], "resources": {"time_limit_s": 1}})
    upstream.submit(job)
    status = _wait(upstream, job)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert "time limit of 1 s exceeded" in status.message


@pytest.mark.slow
def test_upstream_cancel_stops_the_processes(upstream: TesBackend) -> None:
    marker = f"tes-cancel-{time.monotonic_ns()}"
    job = _job({"executors": [{"command": ["sh", "-c", f"sleep 300; echo {marker}"]}]})
    upstream.submit(job)
    deadline = time.monotonic() + 30
    while not pids_matching(marker):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    upstream.cancel(job)
    assert _wait(upstream, job).state is TaskState.CANCELED
    assert pids_matching(marker) == []
    upstream.cancel(job)  # again, after it finished: fine


@pytest.mark.slow
def test_upstream_idempotency_key_survives_a_lost_reply(upstream: TesBackend) -> None:
    job = _job({"executors": [{"command": ["echo", "once"]}]})
    upstream.submit(job)
    first = json.loads((upstream.jobs_dir / job.key / "remote.json").read_text())["remote_id"]
    (upstream.jobs_dir / job.key / "remote.json").unlink()  # as if the reply never came
    upstream.submit(job)
    again = json.loads((upstream.jobs_dir / job.key / "remote.json").read_text())["remote_id"]
    assert again == first
    assert _wait(upstream, job).state is TaskState.COMPLETE
