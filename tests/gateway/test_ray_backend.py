"""The Ray backend: its mapping of Ray's API (against a fake), then a real Ray head.

The shared contract suite (``test_backend_contract.py -k ray``) covers the task semantics;
these tests cover what is particular to Ray: pool description, job states, cancel while
Ray still queues the job, recovery by a second gateway, capacity, and the scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from backend_ray import RAY_DOWN, RAY_UP, require_ray
from computenet.errors import InvalidInput
from computenet.gateway.backends import ray as raymod
from computenet.gateway.backends.base import (
    BackendAuthError,
    BackendDown,
    CapacityUnavailable,
    Job,
    JobStatus,
)
from computenet.gateway.backends.local_runner import write_json
from computenet.gateway.backends.ray import RayBackend
from computenet.model.task import TaskSpec, TaskState
from nodeproc import free_port, pids_matching
from polling import wait_for

Handler = Callable[[httpx.Request], httpx.Response]
_seq = iter(range(1, 10**6))


def _job(spec: dict[str, object]) -> Job:
    n = next(_seq)
    return Job(
        f"cn-RAY{os.getpid()}x{n}x{time.time_ns()}",
        1,
        f"l{n}",
        "cn/ray/ray",
        TaskSpec.model_validate(spec),
    )


def _node(resources: dict[str, float], state: str = "ALIVE") -> dict[str, object]:
    return {"state": state, "resources_total": resources}


def _fake(tmp_path: Path, handler: Handler) -> RayBackend:
    return RayBackend(tmp_path, address="127.0.0.1:1", transport=httpx.MockTransport(handler))


def _cluster(
    *nodes: dict[str, object],
    jobs: dict[str, dict[str, object]] | None = None,
    posted: list[dict[str, object]] | None = None,
) -> Handler:
    """A fake dashboard: a node list, a version, and a table of jobs."""
    table = jobs if jobs is not None else {}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/version":
            return httpx.Response(200, json={"ray_version": "2.60.0"})
        if path == "/api/v0/nodes":
            return httpx.Response(200, json={"data": {"result": {"result": list(nodes)}}})
        if path == "/api/jobs/" and request.method == "POST":
            body = json.loads(request.content)
            if posted is not None:
                posted.append(body)
            if body["submission_id"] in table:
                return httpx.Response(
                    500, text="ValueError: Job with submission_id x already exists"
                )
            table[body["submission_id"]] = {"status": "PENDING", "message": ""}
            return httpx.Response(200, json={"submission_id": body["submission_id"]})
        parts = path.split("/")  # /api/jobs/<id>[/logs|/stop]
        info = table.get(parts[3]) if len(parts) > 3 else None
        if info is None:
            return httpx.Response(404, text="Job does not exist")
        if parts[-1] == "logs":
            return httpx.Response(200, json={"logs": "ModuleNotFoundError: computenet"})
        if parts[-1] == "stop":
            return httpx.Response(200, json={"stopped": True})
        if request.method == "DELETE":
            del table[parts[3]]
            return httpx.Response(200, json={"deleted": True})
        return httpx.Response(200, json=info)

    return handle


CPU_NODE = _node({"CPU": 8.0, "memory": 16 * 2**30})


# ---- against a fake dashboard ---------------------------------------------------------


def test_pool_is_the_smallest_gpu_node_with_its_catalog_model(tmp_path: Path) -> None:
    a100 = {"CPU": 32.0, "memory": 256 * 2**30, "GPU": 8.0, "accelerator_type:A100-80G": 1.0}
    small = {**a100, "CPU": 16.0, "GPU": 4.0}
    backend = _fake(tmp_path, _cluster(CPU_NODE, _node(a100), _node(small), _node(a100, "DEAD")))
    [pool] = backend.pools()
    assert (pool.label, pool.backend, pool.machines, pool.cpu_cores) == ("ray", "ray", 2, 16)
    assert pool.memory_mib == 256 * 1024
    assert pool.accelerator is not None
    assert (pool.accelerator.model, pool.accelerator.count) == ("nvidia-a100-sxm-80g", 4)
    assert pool.accelerator.memory_mib == 80 * 1024
    assert pool.labels == {"ray_version": "2.60.0"}


def test_cpu_only_and_unknown_gpu_pools(tmp_path: Path) -> None:
    [pool] = _fake(tmp_path, _cluster(CPU_NODE)).pools()
    assert pool.accelerator is None and pool.cpu_cores == 8 and pool.machines == 1
    odd = {"CPU": 4.0, "memory": 2**30, "GPU": 1.0, "accelerator_type:RTX-PRO-6000": 1.0}
    [pool] = _fake(tmp_path, _cluster(_node(odd))).pools()
    assert pool.accelerator is not None
    assert pool.accelerator.model == "nvidia-unknown-rtx-pro-6000"
    [pool] = _fake(tmp_path, _cluster(_node({**odd, "accelerator_type:RTX-PRO-6000": 0}))).pools()
    assert pool.accelerator is not None and pool.accelerator.model == "nvidia-unknown-rtx-pro-6000"


def test_no_alive_node_is_down(tmp_path: Path) -> None:
    with pytest.raises(BackendDown, match="no alive node"):
        _fake(tmp_path, _cluster(_node({"CPU": 4.0}, "DEAD"))).pools()


def test_unreachable_or_refusing_ray(tmp_path: Path) -> None:
    backend = RayBackend(tmp_path, address=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    job = _job({"executors": [{"command": ["true"]}]})
    for call in (
        backend.check,
        backend.pools,
        lambda: backend.submit(job),
        lambda: backend.status(job),
    ):
        with pytest.raises(BackendDown, match="does not answer"):
            call()
    denied = _fake(tmp_path, lambda r: httpx.Response(401, text="no"))
    with pytest.raises(BackendAuthError):
        denied.check()


def test_address_forms(tmp_path: Path) -> None:
    assert RayBackend(tmp_path, address="h:8265/").address == "http://h:8265"
    with pytest.raises(InvalidInput):
        RayBackend(tmp_path, address="ray://h:10001")


def test_submit_asks_ray_for_the_task_resources_once(tmp_path: Path) -> None:
    posted: list[dict[str, object]] = []
    gpu = _node({"CPU": 8.0, "memory": 16 * 2**30, "GPU": 2.0})
    backend = _fake(tmp_path, _cluster(gpu, posted=posted))
    job = _job(
        {
            "executors": [{"command": ["true"]}],
            "resources": {"cpu_cores": 2, "ram_gb": 2, "accelerator": {"count": 1}},
        }
    )
    backend.submit(job)
    backend.submit(job)  # Ray has it: not posted again
    assert len(posted) == 1
    body = posted[0]
    assert body["submission_id"] == f"cn-{job.key}"
    assert (body["entrypoint_num_cpus"], body["entrypoint_num_gpus"]) == (2, 1)
    assert body["entrypoint_memory"] == job.spec.resources.need().memory_mib * 2**20
    assert str(body["entrypoint"]).startswith("python -m computenet.gateway.backends.ray /")
    assert (
        json.loads((tmp_path / "jobs" / job.key / "job.json").read_text())["task_id"] == job.task_id
    )


def test_submit_racing_another_submit_is_fine(tmp_path: Path) -> None:
    nodes = _cluster(CPU_NODE)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/jobs/cn-"):
            return httpx.Response(404, text="Job does not exist")  # not there when asked...
        if request.url.path == "/api/jobs/":  # ...but there when posted
            return httpx.Response(500, text="ValueError: Job with submission_id x already exists")
        return nodes(request)

    _fake(tmp_path, handle).submit(_job({"executors": [{"command": ["true"]}]}))


def test_submit_beyond_every_node_is_capacity_unavailable(tmp_path: Path) -> None:
    backend = _fake(tmp_path, _cluster(CPU_NODE))
    for resources in ({"cpu_cores": 9}, {"ram_gb": 64}, {"accelerator": {"count": 1}}):
        job = _job({"executors": [{"command": ["true"]}], "resources": resources})
        with pytest.raises(CapacityUnavailable, match="no Ray node has"):
            backend.submit(job)


@pytest.mark.parametrize(
    ("ray_state", "files", "state", "message"),
    [
        ("PENDING", {}, TaskState.INITIALIZING, ""),
        ("RUNNING", {}, TaskState.INITIALIZING, ""),
        ("RUNNING", {"status.json": {"state": "RUNNING", "executors": []}}, TaskState.RUNNING, ""),
        ("SUCCEEDED", {"result.json": {"state": "COMPLETE"}}, TaskState.COMPLETE, ""),
        (
            "RUNNING",
            {"result.json": {"state": "EXECUTOR_ERROR", "message": "x"}},
            TaskState.EXECUTOR_ERROR,
            "x",
        ),
        ("SUCCEEDED", {}, TaskState.SYSTEM_ERROR, "without the runner's result"),
        ("FAILED", {}, TaskState.SYSTEM_ERROR, "ModuleNotFoundError: computenet"),
        ("STOPPED", {}, TaskState.CANCELED, "canceled"),
        ("PENDING", {"canceled": None}, TaskState.CANCELED, "canceled"),
        (None, {}, TaskState.SYSTEM_ERROR, "no record of this job"),
    ],
)
def test_status_maps_ray_states(
    tmp_path: Path, ray_state: str | None, files: dict[str, object], state: TaskState, message: str
) -> None:
    job = _job({"executors": [{"command": ["true"]}]})
    jobs: dict[str, dict[str, object]] = {}
    if ray_state is not None:
        jobs[f"cn-{job.key}"] = {"status": ray_state, "message": "m"}
    backend = _fake(tmp_path, _cluster(CPU_NODE, jobs=jobs))
    jobdir = tmp_path / "jobs" / job.key
    jobdir.mkdir(parents=True)
    for name, content in files.items():
        if content is None:
            (jobdir / name).touch()
        else:
            assert isinstance(content, dict)
            write_json(jobdir / name, content)
    status = backend.status(job)
    assert status.state is state
    assert message in status.message


def test_forget_deletes_ray_record_and_directory(tmp_path: Path) -> None:
    job = _job({"executors": [{"command": ["true"]}]})
    table: dict[str, dict[str, object]] = {f"cn-{job.key}": {"status": "SUCCEEDED"}}
    backend = _fake(tmp_path, _cluster(CPU_NODE, jobs=table))
    backend.submit(job)
    assert [j.key for j in backend.recover()] == [job.key]
    backend.forget(job)
    assert table == {} and backend.recover() == []
    backend.forget(job)  # again: nothing left, no error


def test_entrypoint_passes_ray_gpus_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job({"executors": [{"command": ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]}]})
    write_json(tmp_path / "job.json", job.to_json())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,GPU-abc")
    assert raymod.main(["x", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "job.json").read_text())["devices"] == [1, "GPU-abc"]
    assert json.loads((tmp_path / "result.json").read_text())["state"] == "COMPLETE"
    assert (tmp_path / "exec-0.stdout").read_text() == "1,GPU-abc\n"


def test_entrypoint_of_a_canceled_or_forgotten_job_runs_nothing(tmp_path: Path) -> None:
    assert raymod.main(["x", str(tmp_path / "gone")]) == 0
    job = _job({"executors": [{"command": ["touch", str(tmp_path / "ran")]}]})
    write_json(tmp_path / "job.json", job.to_json())
    (tmp_path / "canceled").touch()
    assert raymod.main(["x", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["state"] == "CANCELED"
    assert not (tmp_path / "ran").exists()


# ---- against a real Ray head ------------------------------------------------------------


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RayBackend]:
    backend = RayBackend(tmp_path / "gw", address=require_ray())
    yield backend
    backend.close()


def _wait(backend: RayBackend, job: Job, timeout_s: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = backend.status(job)
        if status.state.terminal:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_stdin_and_scrubbed_environment(real: RayBackend) -> None:
    job = _job(
        {
            "executors": [
                {"command": ["sh", "-c", "printf 'in put' > in.txt"], "workdir": "/w"},
                {
                    "command": ["sh", "-c", 'cat; echo " ${RAY_ADDRESS-no-ray-env}"'],
                    "workdir": "/w",
                    "stdin": "in.txt",
                },
            ]
        }
    )
    real.submit(job)
    assert _wait(real, job).state is TaskState.COMPLETE
    assert real.read_log(job, 1, "stdout", 0, 100) == b"in put no-ray-env\n"
    assert real.read_log(job, 1, "stdout", 3, 3) == b"put"


def test_cancel_kills_a_job_that_ignores_sigterm(real: RayBackend) -> None:
    marker = f"sleep 611.{os.getpid()}"
    job = _job({"executors": [{"command": ["sh", "-c", f"trap '' TERM; {marker}; true"]}]})
    real.submit(job)
    wait_for(lambda: bool(pids_matching(marker)), 60, "the task's processes")
    real.cancel(job)
    assert _wait(real, job).state is TaskState.CANCELED
    wait_for(lambda: not pids_matching(marker), 15, "the processes to be gone")


def test_cancel_while_ray_still_queues_the_job(real: RayBackend, tmp_path: Path) -> None:
    [pool] = real.pools()
    if pool.accelerator is None:
        pytest.skip("the Ray head under test has no GPUs to fill")
    cards = pool.accelerator.count
    hog = _job(
        {
            "executors": [{"command": ["sleep", f"612.{os.getpid()}"]}],
            "resources": {"accelerator": {"count": cards}},
        }
    )
    ran = tmp_path / "ran"
    queued = _job(
        {
            "executors": [{"command": ["touch", str(ran)]}],
            "resources": {"accelerator": {"count": cards}},
        }
    )
    real.submit(hog)
    wait_for(lambda: real.status(hog).state is TaskState.RUNNING, 60, "RUNNING")
    real.submit(queued)
    assert real.status(queued).state is TaskState.INITIALIZING
    real.cancel(queued)
    assert real.status(queued).state is TaskState.CANCELED  # at once, though Ray still queues it
    real.cancel(hog)
    assert _wait(real, hog).state is TaskState.CANCELED

    def ended() -> bool:
        info = real._info(queued)
        return info is not None and info["status"] not in ("PENDING", "RUNNING")

    wait_for(ended, 60, "the job to end")
    assert not ran.exists()
    assert real.status(queued).state is TaskState.CANCELED
    real.forget(queued)
    real.forget(hog)


def test_second_gateway_recovers_and_forgets(real: RayBackend, tmp_path: Path) -> None:
    job = _job({"executors": [{"command": ["sh", "-c", "sleep 1; echo done"]}]})
    real.submit(job)
    again = RayBackend(tmp_path / "gw", address=real.address)  # a restarted gateway
    try:
        assert [j.key for j in again.recover()] == [job.key]
        again.submit(job)  # a resent lease: still one Ray job
        status = _wait(again, job)
        assert status.state is TaskState.COMPLETE
        assert again.read_log(job, 0, "stdout", 0, 100) == b"done\n"
        again.forget(job)
        assert again.recover() == [] and again._info(job) is None
    finally:
        again.close()


def test_job_bigger_than_the_cluster_is_refused(real: RayBackend) -> None:
    job = _job({"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 4096}})
    with pytest.raises(CapacityUnavailable):
        real.submit(job)


# ---- the scripts ----------------------------------------------------------------------


def test_ray_up_without_ray_exits_3(tmp_path: Path) -> None:
    env = {**os.environ, "COMPUTENET_RAY_BIN": str(tmp_path / "no-ray")}
    proc = subprocess.run(
        ["bash", str(RAY_UP), str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("ray-up.sh: Ray not available:")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_second_head_side_by_side_then_down() -> None:
    first = require_ray()
    directory = Path(os.path.realpath("/tmp")) / f"cn-ray-t{os.getpid()}"
    port = str(free_port())
    try:
        up = subprocess.run(
            ["bash", str(RAY_UP), str(directory), port],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        address = up.stdout.strip().splitlines()[-1]
        assert address == f"RAY_ADDRESS=http://127.0.0.1:{port}"
        again = subprocess.run(
            ["bash", str(RAY_UP), str(directory), port],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.stdout.strip().splitlines()[-1] == address  # idempotent
        sid = (directory / "sid").read_text().strip()
        down = subprocess.run(
            ["bash", str(RAY_DOWN), str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stderr
        assert not (directory / "sid").exists()
        assert not _session_alive(sid)
        assert httpx.get(f"{first}/api/version", timeout=5).status_code == 200  # untouched
    finally:
        subprocess.run(
            ["bash", str(RAY_DOWN), str(directory)], capture_output=True, timeout=120, check=False
        )
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def _session_alive(sid: str) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[3] == sid and fields[0] != "Z":
            return True
    return False
