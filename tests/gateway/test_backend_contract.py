"""One contract suite, run against every backend that has a ``tests/backend_<name>.py``.

Real backends (Slurm, Ray, another TES service) are started by the project's scripts; they
skip locally when unavailable and fail in CI.
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_testing import BackendUnderTest
from computenet.gateway.backends.base import Backend, Capability, Job, JobStatus
from computenet.model.task import TaskSpec, TaskState
from nodeproc import pids_matching

NAMES = [
    n
    for n in ("local", "slurm", "ray", "tes")
    if (Path(__file__).resolve().parents[1] / f"backend_{n}.py").exists()
]
TIMEOUT_S = 90.0


@pytest.fixture(params=NAMES)
def under_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendUnderTest]:
    module = importlib.import_module(f"backend_{request.param}")
    with module.backend_under_test(tmp_path) as bt:
        yield bt


def _needs(bt: BackendUnderTest, *caps: Capability) -> None:
    missing = bt.backend.unsupported()
    for cap in caps:
        if cap in missing:
            pytest.skip(f"{bt.backend.name} does not support {cap.value}: {missing[cap]}")


_seq = iter(range(1, 10**6))


def _job(bt: BackendUnderTest, spec: dict[str, object], pool: str | None = None) -> Job:
    n = next(_seq)
    tid = f"cn-CONTRACT{random.randint(0, 10**9)}x{n}"
    return Job(tid, 1, f"lease{n}", pool or bt.pool_cpi, TaskSpec.model_validate(spec))


def _wait(backend: Backend, job: Job, terminal: bool = True) -> JobStatus:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        status = backend.status(job)
        if status.state.terminal if terminal else status.state is TaskState.RUNNING:
            return status
        assert not status.state.terminal, status
        assert time.monotonic() < deadline, f"still {status.state} after {TIMEOUT_S} s"
        time.sleep(0.1)


def _read_all(backend: Backend, job: Job, index: int = 0, stream: str = "stdout") -> bytes:
    out = b""
    while True:
        chunk = backend.read_log(job, index, stream, len(out), 1 << 20)
        if not chunk:
            return out
        out += chunk


def _run(
    bt: BackendUnderTest, spec: dict[str, object], pool: str | None = None
) -> tuple[Job, JobStatus]:
    job = _job(bt, spec, pool)
    bt.backend.submit(job)
    try:
        return job, _wait(bt.backend, job)
    except BaseException:
        bt.backend.cancel(job)
        raise


def test_declares_pools(under_test: BackendUnderTest) -> None:
    labels = {p.label for p in under_test.backend.pools()}
    assert under_test.pool_cpi.rsplit("/", 1)[1] in labels
    under_test.backend.check()


def test_success_with_output(under_test: BackendUnderTest) -> None:
    job, status = _run(
        under_test, {"executors": [{"image": "alpine", "command": ["echo", "hello"]}]}
    )
    assert status.state is TaskState.COMPLETE, status
    assert status.executors[0].exit_code == 0
    assert _read_all(under_test.backend, job) == b"hello\n"
    assert status.wall_s >= 0


def test_nonzero_exit_stops_unless_ignored(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.MULTIPLE_EXECUTORS)
    spec = {
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", "exit 3"], "ignore_error": True},
            {"image": "alpine", "command": ["sh", "-c", "echo bad >&2; exit 5"]},
            {"image": "alpine", "command": ["echo", "never"]},
        ]
    }
    job, status = _run(under_test, spec)
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert [e.exit_code for e in status.executors[:2]] == [3, 5]
    assert len(status.executors) == 2
    assert _read_all(under_test.backend, job, 1, "stderr") == b"bad\n"


def test_executors_run_in_order(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.MULTIPLE_EXECUTORS, Capability.WORKDIR)
    spec = {
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", "echo one > f"], "workdir": "/w"},
            {"image": "alpine", "command": ["sh", "-c", "echo two >> f"], "workdir": "/w"},
            {"image": "alpine", "command": ["cat", "f"], "workdir": "/w"},
        ]
    }
    job, status = _run(under_test, spec)
    assert status.state is TaskState.COMPLETE, status
    assert _read_all(under_test.backend, job, 2) == b"one\ntwo\n"


def test_environment_variables(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.ENV)
    spec = {
        "executors": [
            {
                "image": "alpine",
                "command": ["sh", "-c", "echo $GREETING-$OTHER"],
                "env": {"GREETING": "hi there", "OTHER": "x'y"},
            }
        ]
    }
    job, status = _run(under_test, spec)
    assert status.state is TaskState.COMPLETE, status
    assert _read_all(under_test.backend, job) == b"hi there-x'y\n"


def test_working_directory(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.WORKDIR)
    spec = {"executors": [{"image": "alpine", "command": ["pwd"], "workdir": "/data/sub"}]}
    job, status = _run(under_test, spec)
    assert status.state is TaskState.COMPLETE, status
    assert _read_all(under_test.backend, job).decode().rstrip().endswith("/data/sub")


def test_large_stdout_is_intact(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.FULL_LOGS)
    size = 10 * 1024 * 1024  # 10 MB of numbered lines
    script = f"head -c {size} /dev/zero | tr '\\0' 'x' | fold -w 99"
    job, status = _run(
        under_test, {"executors": [{"image": "alpine", "command": ["sh", "-c", script]}]}
    )
    assert status.state is TaskState.COMPLETE, status
    data = _read_all(under_test.backend, job)
    assert len(data) == size + (size - 1) // 99  # fold puts a newline between 99-byte lines
    assert set(data) == {ord("x"), ord("\n")}


def test_time_limit(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.TIME_LIMIT)
    marker = f"{random.randint(400, 499)}.{random.randint(100, 999)}"
    spec = {
        "executors": [{"image": "alpine", "command": ["sleep", marker]}],
        "resources": {"time_limit_s": 2},
    }
    _, status = _run(under_test, spec)
    assert status.state is TaskState.EXECUTOR_ERROR, status
    assert "time limit" in status.message
    if under_test.processes_visible:
        _gone(f"sleep {marker}")


def test_cancel_kills_the_job(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.CANCEL)
    marker = f"{random.randint(500, 599)}.{random.randint(100, 999)}"
    job = _job(under_test, {"executors": [{"image": "alpine", "command": ["sleep", marker]}]})
    under_test.backend.submit(job)
    if under_test.processes_visible:
        deadline = time.monotonic() + TIMEOUT_S
        while not pids_matching(f"sleep {marker}"):
            assert time.monotonic() < deadline, under_test.backend.status(job)
            time.sleep(0.1)
    else:
        _wait(under_test.backend, job, terminal=False)
    under_test.backend.cancel(job)
    under_test.backend.cancel(job)  # idempotent
    assert _wait(under_test.backend, job).state is TaskState.CANCELED
    if under_test.processes_visible:
        _gone(f"sleep {marker}")


def test_gpu_request_is_honoured(under_test: BackendUnderTest) -> None:
    _needs(under_test, Capability.GPUS)
    if under_test.gpu_pool_cpi is None:
        pytest.skip(f"{under_test.backend.name} under test has no GPU pool")
    spec = {
        "executors": [
            {"image": "alpine", "command": ["sh", "-c", "echo gpus=$CUDA_VISIBLE_DEVICES"]}
        ],
        "resources": {"accelerator": {"count": 1}},
    }
    job, status = _run(under_test, spec, under_test.gpu_pool_cpi)
    assert status.state is TaskState.COMPLETE, status
    out = _read_all(under_test.backend, job).decode().strip()
    assert out.startswith("gpus=") and out != "gpus=", out


def test_submit_is_idempotent_and_recoverable(under_test: BackendUnderTest, tmp_path: Path) -> None:
    _needs(under_test, Capability.RECOVER)
    marker = tmp_path / "ran"
    job = _job(
        under_test,
        {"executors": [{"image": "alpine", "command": ["sh", "-c", f"echo x >> {marker}"]}]},
    )
    under_test.backend.submit(job)
    under_test.backend.submit(job)
    assert job.key in {j.key for j in under_test.backend.recover()}
    _wait(under_test.backend, job)
    assert marker.read_text() == "x\n"
    under_test.backend.forget(job)
    assert job.key not in {j.key for j in under_test.backend.recover()}


def _gone(pattern: str) -> None:
    deadline = time.monotonic() + 15
    while pids_matching(pattern):
        assert time.monotonic() < deadline, f"{pattern!r} still running"
        time.sleep(0.1)
