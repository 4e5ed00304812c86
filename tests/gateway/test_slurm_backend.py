"""The Slurm backend: parsers against outputs recorded from a real Slurm 22.05, the batch
script run by bash, and end-to-end jobs on the real cluster ``scripts/slurm-up.sh`` starts."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from backend_slurm import POOL_CPI, require_slurm
from computenet.gateway.backends import slurm_parse as sp
from computenet.gateway.backends.base import BackendDown, CapacityUnavailable, Job, JobStatus
from computenet.gateway.backends.slurm import SlurmBackend
from computenet.model.pool import Capacity, Region
from computenet.model.task import TaskSpec, TaskState
from nodeproc import pids_matching

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def _record(name: str) -> dict[str, str]:
    return sp.parse_records(_fixture(name))[0]


# --- parsers -----------------------------------------------------------------------------------


def test_node_record_keeps_values_with_spaces() -> None:
    node = _record("scontrol-show-node.txt")
    assert node["NodeName"] == "vm"
    assert node["CPUTot"] == "2"
    assert node["Gres"] == "gpu:2"
    assert node["Partitions"] == "debug"
    assert node["OS"].startswith("Linux ") and " SMP " in node["OS"]
    assert node["RealMemory"] == "22899"  # slurm-up.sh declares 95% of the machine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu:2", [sp.GresItem("gpu", None, 2)]),
        ("gpu:a100:2", [sp.GresItem("gpu", "a100", 2)]),
        (
            "gpu:a100:4(S:0-1),mps:200",
            [sp.GresItem("gpu", "a100", 4), sp.GresItem("mps", None, 200)],
        ),
        (
            "gpu:tesla:2(S:0),gpu:v100:1(S:1)",
            [sp.GresItem("gpu", "tesla", 2), sp.GresItem("gpu", "v100", 1)],
        ),
        ("(null)", []),
        ("", []),
    ],
)
def test_parse_gres(text: str, expected: list[sp.GresItem]) -> None:
    assert sp.parse_gres(text) == expected


def test_gpus_total_and_type() -> None:
    assert sp.gpus(sp.parse_gres("gpu:a100:4(S:0-1),mps:200")) == (4, "a100")
    assert sp.gpus(sp.parse_gres("gpu:a100:2,gpu:v100:1")) == (3, None)  # mixed: no one type
    assert sp.gpus(sp.parse_gres("(null)")) == (0, None)


def test_pool_from_recorded_cluster() -> None:
    parts = sp.partitions(
        _fixture("scontrol-show-partition.txt"), _fixture("scontrol-show-node.txt"), None
    )
    assert [p.name for p in parts] == ["debug"]
    pending = sp.parse_pending(_fixture("squeue-pending.txt"))
    pool = sp.pool_spec(parts[0], pending["debug"], price_per_card_hour=Decimal("2.5"))
    assert pool.label == "debug" and pool.backend == "slurm"
    assert (pool.cpu_cores, pool.memory_mib, pool.machines) == (2, 22899, 1)
    assert pool.architecture.value == "x86_64"
    assert pool.accelerator is not None
    assert (pool.accelerator.vendor, pool.accelerator.model) == ("nvidia", "nvidia-unknown")
    assert (pool.accelerator.count, pool.accelerator.memory_mib) == (2, 0)
    assert pool.price_per_card_hour == Decimal("2.5")
    # Two pending jobs: 2 CPUs x 30 min, 8 CPUs x no limit (counted as 3600 s), on 2 CPUs.
    assert pool.labels["pending_jobs"] == "2"
    assert pool.labels["wait_estimate_s"] == str((2 * 1800 + 8 * 3600) // 2)


def test_typed_gres_resolves_through_the_catalog() -> None:
    parts = sp.partitions(
        _fixture("scontrol-show-partition.txt"), _fixture("scontrol-show-node-typed.txt"), None
    )
    pool = sp.pool_spec(parts[0], [], region=Region(code="31"))
    assert pool.accelerator is not None
    assert pool.accelerator.model == "nvidia-a100-sxm-40g"
    assert pool.accelerator.memory_mib == 40 * 1024
    assert pool.region.code == "31"
    assert pool.labels["pending_jobs"] == "0" and pool.labels["wait_estimate_s"] == "0"
    unknown = sp.accelerator(1, "Tesla_X9")
    assert (unknown.model, unknown.memory_mib) == ("nvidia-unknown-tesla-x9", 0)


def test_partition_selection_and_labels() -> None:
    parts, nodes = _fixture("scontrol-show-partition.txt"), _fixture("scontrol-show-node.txt")
    assert sp.partitions(parts, nodes, ["other"]) == []
    assert [p.label for p in sp.partitions(parts, nodes, ["debug"], "hpc-")] == ["hpc-debug"]
    down = parts.replace("State=UP", "State=DOWN")
    assert sp.partitions(down, nodes, None) == []
    assert sp.sanitize_label("GPU_A100.80g") == "gpu-a100-80g"
    assert sp.sanitize_label("___") == "slurm"


def test_parse_squeue() -> None:
    queue = sp.parse_squeue(_fixture("squeue-all.txt"))
    assert queue["1"] == ("RUNNING", "")
    assert queue["2"] == ("COMPLETED", "")
    assert queue["3"] == ("FAILED", "NonZeroExitCode")
    assert queue["5"] == ("PENDING", "Resources")
    assert queue["6"] == ("PENDING", "PartitionConfig")
    assert queue["6"][1] in sp.NEVER_STARTS
    assert sp.parse_squeue(_fixture("squeue-unknown-id.txt")) == {}


def test_parse_sacct_jobcomp() -> None:
    jobs = sp.parse_sacct(_fixture("sacct-c.txt"))
    assert set(jobs) == {str(i) for i in range(1, 9)}
    assert jobs["3"].state == "FAILED" and jobs["3"].exit_code == 3
    assert jobs["1"].state == "TIMEOUT"
    assert jobs["4"].state == "CANCELLED"
    start, end = jobs["1"].start, jobs["1"].end
    assert start is not None and end is not None
    assert 55 <= (end - start).total_seconds() <= 120  # a 1-minute limit, checked every 30 s
    assert sp.parse_sacct("1.batch|COMPLETED|0:0|x|y\n") == {}


@pytest.mark.parametrize(
    ("name", "state", "reason", "exit_code", "signal", "ended"),
    [
        ("completed", "COMPLETED", "", 0, 0, True),
        ("failed", "FAILED", "NonZeroExitCode", 3, 0, True),
        ("cancelled", "CANCELLED", "", 0, 15, True),
        ("timeout", "TIMEOUT", "TimeLimit", 0, 15, True),
        ("running", "RUNNING", "", 0, 0, False),
        ("pending", "PENDING", "Resources", 0, 0, False),
        ("never", "PENDING", "PartitionConfig", 0, 0, False),
    ],
)
def test_job_from_scontrol(
    name: str, state: str, reason: str, exit_code: int, signal: int, ended: bool
) -> None:
    job = sp.job_from_scontrol(_record(f"scontrol-show-job-{name}.txt"))
    assert (job.state, job.reason, job.exit_code, job.signal) == (state, reason, exit_code, signal)
    assert (job.end is not None) == ended
    assert job.job_id.isdigit()


def test_error_classification() -> None:
    errors = _fixture("sbatch-errors.txt").split("$ ")[1:]
    assert len(errors) == 3
    assert all(sp.classify_error(e) == "capacity" for e in errors)
    assert sp.classify_error(_fixture("sbatch-down.txt")) == "down"
    assert sp.classify_error(_fixture("squeue-down.txt")) == "down"
    assert sp.classify_error(_fixture("squeue-unknown-id.txt")) == "other"
    assert " is UP" in _fixture("scontrol-ping-up.txt")
    assert " is UP" not in _fixture("scontrol-ping-down.txt")


def test_small_parsers() -> None:
    assert sp.parse_sbatch("123\n") == "123"
    assert sp.parse_sbatch("77;cluster\n") == "77"
    with pytest.raises(ValueError):
        sp.parse_sbatch("sbatch: error: nope")
    assert sp.parse_duration("30:00") == 1800
    assert sp.parse_duration("1:00:00") == 3600
    assert sp.parse_duration("1-02:03:04") == 93784
    assert sp.parse_duration("5") == 300
    assert sp.parse_duration("UNLIMITED") is None
    assert sp.parse_state("CANCELLED by 0") == "CANCELLED"
    assert sp.parse_exit_code("0:15") == (0, 15)
    assert sp.parse_time("Unknown") is None
    when = sp.parse_time("2026-11-21T16:34:32")
    assert isinstance(when, datetime) and when.tzinfo is not None


def test_refusal_of_jobs_no_node_fits() -> None:
    part = sp.partitions(
        _fixture("scontrol-show-partition.txt"), _fixture("scontrol-show-node.txt"), None
    )[0]
    assert sp.refusal(part, Capacity(cpu_cores=2, memory_mib=1024, accelerators=2), 60) is None
    assert sp.refusal(part, Capacity(cpu_cores=3, memory_mib=1024), None) is not None
    assert sp.refusal(part, Capacity(cpu_cores=1, memory_mib=10**6), None) is not None
    assert sp.refusal(part, Capacity(cpu_cores=1, memory_mib=1, accelerators=3), None) is not None


def test_outcomes_of_jobs_slurm_ended() -> None:
    def ended(state: str) -> tuple[TaskState, str]:
        return sp.map_ended(sp.SlurmJob("9", state), 5, 954)

    assert ended("CANCELLED") == (TaskState.CANCELED, "canceled")
    assert ended("TIMEOUT") == (TaskState.EXECUTOR_ERROR, "time limit of 5 s exceeded")
    assert ended("OUT_OF_MEMORY")[0] is TaskState.EXECUTOR_ERROR
    assert ended("NODE_FAIL")[0] is TaskState.SYSTEM_ERROR
    assert ended("PREEMPTED")[0] is TaskState.SYSTEM_ERROR
    assert ended("FAILED")[0] is TaskState.SYSTEM_ERROR  # the script died before its outcome


def test_status_from_events() -> None:
    events = sp.parse_events(
        '{"event":"start","t_us":1000000}\n'
        '{"event":"exec_start","index":0,"t_us":1000000}\n'
        '{"event":"exec_end","index":0,"t_us":2000000,"exit_code":4,"timed_out":false}\n'
        '{"event":"exec_start","index":1,"t_us":2000000}\n'
        '{"event":"exec_end","index":1,"t_us":3500000,"exit_code":5,"timed_out":false}\n'
        '{"event":"done","outcome":"failed","index":1,"t_us":3500000}\n'
        '{"event":"exec_en'  # a torn last line is skipped
    )
    status = sp.status_from_events(events, None)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.message == "executor 1 exited with code 5"
    assert [e.exit_code for e in status.executors] == [4, 5]
    assert status.wall_s == Decimal("2.5")
    running = sp.status_from_events(events[:2], None, now_us=4_000_000)
    assert running.state is TaskState.RUNNING and running.wall_s == 3


# --- the batch script, run by bash without Slurm --------------------------------------------------

NASTY = "$(touch PWNED) `touch PWNED` ; touch PWNED ' \" \\ \n* ~ $HOME"


def _run_script(tmp_path: Path, spec: dict[str, object]) -> list[dict[str, object]]:
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    script = jobdir / "job.sh"
    script.write_text(sp.batch_script("cn-X.1", jobdir, TaskSpec.model_validate(spec)))
    subprocess.run(["bash", str(script)], cwd=tmp_path, check=False, timeout=60)
    return sp.parse_events((jobdir / "status.jsonl").read_text())


def test_script_quotes_every_user_string(tmp_path: Path) -> None:
    spec = {
        "executors": [
            {
                "command": ["printf", "%s|%s", NASTY, "$X"],
                "env": {"X": NASTY},
                "workdir": "/d ir/$(touch PWNED)",
            },
            {
                "command": ["sh", "-c", 'printf %s "$X"'],
                "env": {"X": NASTY},
            },
            {"command": ["env"], "env": {"weird-name": "ok"}},  # no shell name, still set
        ]
    }
    events = _run_script(tmp_path, spec)
    assert sp.status_from_events(events, None).state is TaskState.COMPLETE
    jobdir = tmp_path / "job"
    assert (jobdir / "exec-0.stdout").read_text() == f"{NASTY}|$X"
    assert (jobdir / "exec-1.stdout").read_text() == NASTY
    assert "\nweird-name=ok\n" in (jobdir / "exec-2.stdout").read_text()
    assert (jobdir / "work" / "d ir" / "$(touch PWNED)").is_dir()
    assert not list(tmp_path.rglob("PWNED"))


def test_script_stdin_stop_on_error_and_time_limit(tmp_path: Path) -> None:
    spec = {
        "executors": [
            {"command": ["sh", "-c", "echo from-file > in.txt"], "workdir": "/w"},
            {"command": ["cat"], "workdir": "/w", "stdin": "in.txt"},
            {"command": ["sh", "-c", "exit 7"], "ignore_error": True},
            {"command": ["sleep", "30"]},
            {"command": ["echo", "never"]},
        ],
        "resources": {"time_limit_s": 1},
    }
    started = time.monotonic()
    events = _run_script(tmp_path, spec)
    assert time.monotonic() - started < 10
    status = sp.status_from_events(events, 1)
    assert status.state is TaskState.EXECUTOR_ERROR
    assert status.message == "time limit of 1 s exceeded"
    assert [e.exit_code for e in status.executors] == [0, 0, 7, 124]
    assert (tmp_path / "job" / "exec-1.stdout").read_text() == "from-file\n"


def test_script_keeps_cuda_visible_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # as Slurm sets it for --gres=gpu:1
    _run_script(tmp_path, {"executors": [{"command": ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]}]})
    assert (tmp_path / "job" / "exec-0.stdout").read_text() == "1\n"


# --- against the real Slurm -----------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> SlurmBackend:
    conf = require_slurm()
    return SlurmBackend(tmp_path / "gw", partition="debug", slurm_conf=conf)


def _job(spec: dict[str, object], pool: str = POOL_CPI) -> Job:
    tid = f"cn-SLURM{random.randint(0, 10**9)}"
    return Job(tid, 1, "lease", pool, TaskSpec.model_validate(spec))


def _wait(backend: SlurmBackend, job: Job, timeout_s: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = backend.status(job)
        if status.state.terminal:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_pools_probe_the_real_cluster(backend: SlurmBackend) -> None:
    backend.check()
    (pool,) = backend.pools()
    assert pool.label == "debug" and pool.backend == "slurm"
    assert pool.cpu_cores >= 1 and pool.memory_mib >= 1
    assert pool.accelerator is not None and pool.accelerator.count == 2
    assert {"pending_jobs", "wait_estimate_s"} <= set(pool.labels)


def test_pending_queue_shows_in_pool_labels(backend: SlurmBackend) -> None:
    (pool,) = backend.pools()
    hog = {"executors": [{"command": ["sleep", "120"]}], "resources": {"cpu_cores": pool.cpu_cores}}
    hogs = [
        _job(hog),
        _job({**hog, "resources": {"cpu_cores": pool.cpu_cores, "time_limit_s": 600}}),
    ]
    try:
        for job in hogs:
            backend.submit(job)
        deadline = time.monotonic() + 30
        while backend.status(hogs[1]).state is not TaskState.INITIALIZING or not any(
            backend.status(j).state is TaskState.RUNNING for j in hogs
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        labels = backend.pools()[0].labels
        assert int(labels["pending_jobs"]) >= 1
        assert int(labels["wait_estimate_s"]) >= 600
        assert backend.status(hogs[1]).message.startswith("pending")
    finally:
        for job in hogs:
            backend.cancel(job)
    assert {_wait(backend, j).state for j in hogs} == {TaskState.CANCELED}


def test_two_gpus_and_stdin(backend: SlurmBackend) -> None:
    spec = {
        "executors": [
            {"command": ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES > in.txt"], "workdir": "/w"},
            {"command": ["cat"], "workdir": "/w", "stdin": "in.txt"},
        ],
        "resources": {"accelerator": {"count": 2}},
    }
    job = _job(spec)
    backend.submit(job)
    assert _wait(backend, job).state is TaskState.COMPLETE
    assert backend.read_log(job, 1, "stdout", 0, 100) == b"0,1\n"
    assert backend.read_log(job, 1, "stdout", 2, 100) == b"1\n"


def test_cancel_kills_the_whole_process_tree(backend: SlurmBackend) -> None:
    a, b = f"{random.randint(600, 699)}.5", f"{random.randint(700, 799)}.5"
    job = _job({"executors": [{"command": ["sh", "-c", f"sleep {a} & sleep {b}"]}]})
    backend.submit(job)
    deadline = time.monotonic() + 30
    while not (pids_matching(f"sleep {a}") and pids_matching(f"sleep {b}")):
        assert time.monotonic() < deadline, backend.status(job)
        time.sleep(0.05)
    assert backend.status(job).state is TaskState.RUNNING
    backend.cancel(job)
    status = _wait(backend, job)
    assert status.state is TaskState.CANCELED
    deadline = time.monotonic() + 15
    while pids_matching(f"sleep {a}") or pids_matching(f"sleep {b}"):
        assert time.monotonic() < deadline, "processes outlived scancel"
        time.sleep(0.1)
    backend.cancel(job)  # idempotent


def test_capacity_refusals(backend: SlurmBackend) -> None:
    with pytest.raises(CapacityUnavailable):
        backend.submit(
            _job({"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 4096}})
        )
    with pytest.raises(CapacityUnavailable):
        backend.submit(_job({"executors": [{"command": ["true"]}]}, pool="cn/slurm/nope"))
    many_gpus = {"executors": [{"command": ["true"]}], "resources": {"accelerator": {"count": 3}}}
    with pytest.raises(CapacityUnavailable):
        backend.submit(_job(many_gpus))


def test_restart_recovers_and_forget_cleans_up(backend: SlurmBackend, tmp_path: Path) -> None:
    job = _job({"executors": [{"command": ["sh", "-c", "sleep 1; echo done"]}]})
    backend.submit(job)
    slurm_id = (tmp_path / "gw" / "jobs" / job.key / "slurm_id").read_text()
    backend.submit(job)  # idempotent: the same Slurm job
    assert (tmp_path / "gw" / "jobs" / job.key / "slurm_id").read_text() == slurm_id
    again = SlurmBackend(tmp_path / "gw", partition="debug", slurm_conf=backend.slurm_conf)
    assert [j.key for j in again.recover()] == [job.key]
    status = _wait(again, job)
    assert status.state is TaskState.COMPLETE and status.wall_s >= 1
    assert again.read_log(job, 0, "stdout", 0, 100) == b"done\n"
    again.forget(job)
    assert again.recover() == []
    assert not (tmp_path / "gw" / "jobs" / job.key).exists()


def test_a_dead_controller_is_backend_down(tmp_path: Path) -> None:
    conf = require_slurm()
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=\d+$", "SlurmctldPort=9", conf.read_text()))
    os.symlink(conf.parent / "gres.conf", tmp_path / "gres.conf")
    backend = SlurmBackend(tmp_path / "gw", slurm_conf=dead)
    with pytest.raises(BackendDown):
        backend.check()
    started = time.monotonic()
    with pytest.raises(BackendDown):  # a ping first: no 20 s of client retries
        backend.pools()
    with pytest.raises(BackendDown):
        backend.submit(_job({"executors": [{"command": ["true"]}]}))
    assert time.monotonic() - started < 5
