"""The local backend against real processes: outcomes, limits, cancel, GPUs, recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from computenet.gateway.backends.base import CapacityUnavailable, Job, JobStatus
from computenet.gateway.backends.local import SPARE_NICE, LocalBackend, _may_raise_priority
from computenet.model.pool import Accelerator, PoolSpec
from computenet.model.task import TaskSpec, TaskState
from nodeproc import pids_matching
from polling import wait_for

POOL = PoolSpec(label="host", cpu_cores=2, memory_mib=4096)
GPU_POOL = PoolSpec(
    label="gpu",
    cpu_cores=8,
    memory_mib=65536,
    accelerator=Accelerator(vendor="nvidia", model="nvidia-h100-sxm", memory_mib=81559, count=2),
)


def _job(spec: dict[str, object], n: int = 1, pool: str = "cn/local/host") -> Job:
    return Job(f"cn-T{n}", 1, f"lease{n}", pool, TaskSpec.model_validate(spec))


def _wait(backend: LocalBackend, job: Job, timeout_s: float = 20) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = backend.status(job)
        if status.state.terminal:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def _out(backend: LocalBackend, job: Job, index: int = 0, stream: str = "stdout") -> str:
    return backend.read_log(job, index, stream, 0, 1 << 20).decode()


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path, [POOL])


def test_executors_run_in_order_in_their_workdir(backend: LocalBackend) -> None:
    job = _job(
        {
            "executors": [
                {"command": ["sh", "-c", "echo one > f.txt"], "workdir": "/data"},
                {"command": ["cat", "f.txt"], "workdir": "/data"},
            ]
        }
    )
    backend.submit(job)
    status = _wait(backend, job)
    assert status.state is TaskState.COMPLETE
    assert [e.exit_code for e in status.executors] == [0, 0]
    assert _out(backend, job, 1) == "one\n"
    assert status.wall_s > 0


def test_failure_stops_unless_ignored(backend: LocalBackend) -> None:
    job = _job(
        {
            "executors": [
                {"command": ["sh", "-c", "exit 4"], "ignore_error": True},
                {"command": ["sh", "-c", "echo err >&2; exit 5"]},
                {"command": ["echo", "never"]},
            ]
        }
    )
    backend.submit(job)
    status = _wait(backend, job)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert [e.exit_code for e in status.executors] == [4, 5]
    assert "exited with code 5" in status.message
    assert _out(backend, job, 1, "stderr") == "err\n"


def test_missing_program_is_exit_127(backend: LocalBackend) -> None:
    job = _job({"executors": [{"command": ["no-such-program-xyz"]}]})
    backend.submit(job)
    status = _wait(backend, job)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.executors[0].exit_code == 127
    assert "cannot start" in _out(backend, job, 0, "stderr")


def test_time_limit_kills_the_whole_group(backend: LocalBackend) -> None:
    job = _job(
        {
            "executors": [{"command": ["sh", "-c", "sleep 301.5 & sleep 301.5; wait"]}],
            "resources": {"time_limit_s": 1},
        }
    )
    backend.submit(job)
    status = _wait(backend, job)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert "time limit of 1 s exceeded" in status.message
    assert not pids_matching("sleep 301.5")


def test_cancel_kills_background_children(backend: LocalBackend) -> None:
    job = _job({"executors": [{"command": ["sh", "-c", "sleep 302.5 & sleep 302.5; wait"]}]})
    backend.submit(job)
    deadline = time.monotonic() + 10
    while len(pids_matching("sleep 302.5")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    backend.cancel(job)
    assert _wait(backend, job).state is TaskState.CANCELED
    assert not pids_matching("sleep 302.5")


def test_environment_is_scrubbed(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", "s3cret")
    job = _job({"executors": [{"command": ["env"], "env": {"MY_VAR": "x"}}]})
    backend.submit(job)
    _wait(backend, job)
    env = _out(backend, job)
    assert "MY_VAR=x" in env
    assert "s3cret" not in env


def test_resubmitting_a_leased_job_does_not_run_it_twice(
    backend: LocalBackend, tmp_path: Path
) -> None:
    marker = tmp_path / "count"
    job = _job({"executors": [{"command": ["sh", "-c", f"echo x >> {marker}"]}]})
    backend.submit(job)
    backend.submit(job)
    _wait(backend, job)
    assert marker.read_text() == "x\n"


def test_gpus_are_given_out_exclusively(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, [GPU_POOL], {"gpu": [0, 1]})
    spec = {
        "executors": [{"command": ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES; sleep 0.3"]}],
        "resources": {"accelerator": {"count": 1}},
    }
    a, b, c = (_job(spec, n, "cn/local/gpu") for n in (1, 2, 3))
    backend.submit(a)
    backend.submit(b)
    with pytest.raises(CapacityUnavailable, match="0 free GPUs"):
        backend.submit(c)
    _wait(backend, a)
    _wait(backend, b)
    assert {_out(backend, a).strip(), _out(backend, b).strip()} == {"0", "1"}
    backend.forget(a)
    backend.submit(c)  # a's card is free again
    _wait(backend, c)
    # A restarted gateway learns which cards its surviving jobs hold.
    again = LocalBackend(tmp_path, [GPU_POOL], {"gpu": [0, 1]})
    assert {j.key for j in again.recover()} == {b.key, c.key}
    with pytest.raises(CapacityUnavailable):
        again.submit(_job(spec, 4, "cn/local/gpu"))


def test_recover_finds_jobs_of_an_earlier_gateway(tmp_path: Path) -> None:
    first = LocalBackend(tmp_path, [POOL])
    job = _job({"executors": [{"command": ["sh", "-c", "sleep 0.5; echo done"]}]})
    first.submit(job)
    second = LocalBackend(tmp_path, [POOL])  # as if the gateway restarted
    assert [j.key for j in second.recover()] == [job.key]
    assert _wait(second, job).state is TaskState.COMPLETE
    assert _out(second, job) == "done\n"
    second.forget(job)
    assert second.recover() == []


def test_runner_that_dies_is_a_system_error(backend: LocalBackend) -> None:
    job = _job({"executors": [{"command": ["sleep", "303.5"]}]})
    backend.submit(job)
    deadline = time.monotonic() + 10
    while not pids_matching("sleep 303.5"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner = int((backend.jobs_dir / job.key / "runner.pid").read_text())
    os.kill(runner, 9)
    status = _wait(backend, job)
    assert status.state is TaskState.SYSTEM_ERROR
    assert "died without a result" in status.message
    backend.forget(job)  # kills the orphaned executor too
    assert not pids_matching("sleep 303.5")


def test_a_task_without_cards_sees_none_on_a_gpu_pool(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, [GPU_POOL], {"gpu": [0, 1]})
    spec = {"executors": [{"command": ["sh", "-c", "echo [${CUDA_VISIBLE_DEVICES-unset}]"]}]}
    job = _job(spec, 1, "cn/local/gpu")
    backend.submit(job)
    _wait(backend, job)
    assert _out(backend, job) == "[]\n"


def test_data_urls_are_checked_again_where_they_are_fetched(
    backend: LocalBackend, tmp_path: Path
) -> None:
    from computenet.model.urlpolicy import UrlPolicy

    data = tmp_path / "data.txt"
    data.write_text("local data\n")
    spec = {
        "inputs": [{"url": data.as_uri(), "path": "/in/data.txt"}],
        "executors": [{"command": ["cat", "in/data.txt"]}],
    }
    # The node let the URL through; this gateway's policy (the default) refuses local files.
    refused = Job("cn-T1", 1, "lease1", "cn/local/host", TaskSpec.model_validate(spec), {},
                  UrlPolicy().to_json())  # fmt: skip
    backend.submit(refused)
    status = _wait(backend, refused)
    assert status.state is TaskState.SYSTEM_ERROR
    assert f"input {data.as_uri()}: refused by this gateway" in status.message
    # Opened with --url-allow, the same input is fetched.
    allowed = Job("cn-T2", 1, "lease2", "cn/local/host", TaskSpec.model_validate(spec), {},
                  UrlPolicy((f"file://{tmp_path}/",)).to_json())  # fmt: skip
    backend.submit(allowed)
    assert _wait(backend, allowed).state is TaskState.COMPLETE
    assert _out(backend, allowed) == "local data\n"
    # The policy travels with the job, so a restarted gateway still applies it.
    assert Job.from_json(allowed.to_json()).url_policy == allowed.url_policy


def test_a_watching_agent_gets_a_runner_started_ahead_and_a_wake_up_at_each_end(
    tmp_path: Path,
) -> None:
    """With ``watch``, a job goes to the runner started ahead (its secrets down its stdin),
    the next spare starts as the job is handed over (by the job's own thread, so the agent
    does not wait for the fork; one only), and the agent is woken as the runner ends."""
    backend = LocalBackend(tmp_path, [POOL])
    woken = threading.Event()
    backend.watch(woken.set)
    spare = backend._spare
    assert spare is not None and spare.poll() is None
    spec = {"executors": [{"command": ["sh", "-c", 'echo "$TOKEN"']}]}
    job = Job("cn-T1", 1, "lease1", "cn/local/host", TaskSpec.model_validate(spec), {"TOKEN": "s3"})
    backend.submit(job)
    assert int((tmp_path / "jobs" / job.key / "runner.pid").read_text()) == spare.pid
    nxt = wait_for(lambda: backend._spare, 10, "the next spare")
    assert nxt is not spare and nxt.poll() is None
    backend._refill()  # a spare is alive: no second one
    assert backend._spare is nxt
    assert woken.wait(20), "no wake-up when the runner ended"
    assert backend.status(job).state is TaskState.COMPLETE
    assert _out(backend, job) == "s3\n"
    assert "s3" not in (tmp_path / "jobs" / job.key / "job.json").read_text()
    assert backend._spare is nxt  # the job's end started no other
    backend.forget(job)
    assert nxt.stdin is not None
    nxt.stdin.close()  # as when the gateway goes away: the spare ends quietly
    assert nxt.wait(10) == 0


@pytest.mark.skipif(
    not _may_raise_priority(), reason="only a gateway that may raise it again lowers it"
)
def test_a_root_gateways_spare_loads_at_a_low_priority_and_runs_its_job_at_the_gateways(
    tmp_path: Path,
) -> None:
    """A spare's Python start must not slow the task running meanwhile; its job must not run
    slower than the gateway would run it."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    backend = LocalBackend(tmp_path, [POOL])
    backend.watch(lambda: None)
    spare = backend._spare
    assert spare is not None
    assert os.getpriority(os.PRIO_PROCESS, spare.pid) == min(19, own + SPARE_NICE)
    spec = {"executors": [{"command": ["sleep", "30"]}]}
    job = Job("cn-T9", 1, "lease9", "cn/local/host", TaskSpec.model_validate(spec))
    backend.submit(job)
    try:
        assert os.getpriority(os.PRIO_PROCESS, spare.pid) == own
        nxt = wait_for(lambda: backend._spare, 10, "the next spare")
        assert os.getpriority(os.PRIO_PROCESS, nxt.pid) == min(19, own + SPARE_NICE)
    finally:
        backend.cancel(job)
        spare.wait(20)
        backend.forget(job)
        if backend._spare is not None and backend._spare.stdin is not None:
            backend._spare.stdin.close()
            backend._spare.wait(10)


def test_the_runner_starts_without_the_heavy_imports() -> None:
    """A spare runner is started just before its task, so its Python start is on the task's
    path: it must not load data staging, the egress proxy or asyncio for a plain task."""
    code = (
        "import sys, computenet.gateway.backends.local_runner as r; "
        "print(sorted(m for m in ('asyncio', 'ssl', 'fsspec', 'computenet.gateway.egress_proxy',"
        " 'computenet.gateway.staging') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop CAP_SYS_NICE from it")
def test_a_root_gateway_without_cap_sys_nice_keeps_its_spares_at_its_own_priority(
    tmp_path: Path,
) -> None:
    """Root in a container often lacks CAP_SYS_NICE: it could lower a spare's priority but
    not raise it again, so its jobs would all run at nice 10. It must not lower it."""
    code = f"""
import os, time
from pathlib import Path
from computenet.gateway.backends.base import Job
from computenet.gateway.backends.local import LocalBackend, _may_raise_priority
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec
pool = PoolSpec(label="host", cpu_cores=2, memory_mib=2048)
backend = LocalBackend(Path({str(tmp_path)!r}), [pool])
backend.watch(lambda: None)
spare = backend._spare
own = os.getpriority(os.PRIO_PROCESS, 0)
print(_may_raise_priority(), os.getpriority(os.PRIO_PROCESS, spare.pid) == own)
spec = TaskSpec.model_validate({{"executors": [{{"command": ["sleep", "30"]}}]}})
job = Job("cn-T8", 1, "l8", "cn/p/host", spec)
backend.submit(job)
print(os.getpriority(os.PRIO_PROCESS, spare.pid) == own)
backend.cancel(job)
spare.wait(20)
backend.forget(job)
"""
    out = subprocess.run(
        ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"], out.stdout
