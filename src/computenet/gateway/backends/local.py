"""The local backend: runs tasks as processes on the gateway's own host.

Each attempt gets a directory under the gateway's state dir holding the job, its working
directory, executor output and outcome. A detached runner process does the work, so the
gateway can crash and come back without losing or repeating a task; it is given its job
(directory and secrets) on its stdin, so one can be started ahead of need. With a sandbox each job
holds a uid of its own from the gateway's range until it is forgotten; the uid is written in
the job file, so a restarted gateway reads back which uids are taken.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from computenet.errors import InvalidInput
from computenet.gateway.backends.base import (
    Backend,
    CapacityUnavailable,
    ExecutorStatus,
    Job,
    JobStatus,
    read_output,
)
from computenet.gateway.backends.cgroups import TaskCgroup
from computenet.gateway.backends.containers import (
    choose_runtime,
    container_name,
    remove_container,
)
from computenet.gateway.backends.ingress import replica_socket_path
from computenet.gateway.backends.local_runner import write_json
from computenet.gateway.backends.sandbox import Sandbox
from computenet.gateway.probe_vendors import VISIBLE_DEVICES_ENV
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskState

CANCEL_FORCE_AFTER_S = 10.0
log = logging.getLogger("computenet.gateway")
RUNNER = [sys.executable, "-m", "computenet.gateway.backends.local_runner"]
# How much lower a spare runner's CPU priority is while it loads Python, so that on a busy
# host it does not slow the task that is running now; it takes the gateway's own back with
# its job. Only a gateway that may raise a priority again (root with CAP_SYS_NICE) does this.
SPARE_NICE = 10
CAP_SYS_NICE = 23  # linux/capability.h


def _may_raise_priority() -> bool:
    """Whether this process may give a process it lowered its own priority again: root
    with CAP_SYS_NICE (a container's root often lacks it)."""
    if os.geteuid() != 0:
        return False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        pass
    return False


def _alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie (``kill -0`` succeeds on zombies)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class LocalBackend(Backend):
    """Runs jobs on this host under ``state_dir/jobs``."""

    name = "local"
    injects_secrets = True  # through the runner's environment, read and dropped at its start

    def __init__(
        self,
        state_dir: Path,
        pools: list[PoolSpec],
        devices: dict[str, list[int]] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        if not pools:
            raise InvalidInput("the local backend needs at least one pool")
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.chmod(0o700)  # jobs' files (logs, outcomes) are the gateway's alone
        self._pools = pools
        # Free GPU indices per pool label; a job holds its cards until it is forgotten.
        self._free_devices = {label: set(ids) for label, ids in (devices or {}).items()}
        self._held: dict[str, tuple[str, list[int]]] = {}
        self._vendor = {p.label: p.accelerator.vendor for p in pools if p.accelerator}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._cancel_at: dict[str, float] = {}
        self.sandbox = sandbox  # None: tasks run as the gateway's own (unprivileged) user
        if sandbox is None and any(p.egress for p in pools):
            log.warning(
                "a pool lists egress endpoints, but tasks here are not sandboxed: they share "
                "the host's network, the list does not bound it (run the gateway as root)"
            )
        self._uids: dict[str, int] = {}  # job key -> the uid it holds
        self._wake: Callable[[], None] = lambda: None
        # A runner started ahead of need (Python and its imports take longer than a short
        # task runs); kept only for an agent that watches (see ``watch``).
        self._keep_spare = False
        self._spare: subprocess.Popen[bytes] | None = None
        self._nice_spares = _may_raise_priority()
        self._lock = threading.Lock()
        if sandbox is not None:
            for job_file in self.jobs_dir.glob("*/job.json"):
                held = (self._read(job_file) or {}).get("sandbox")
                if isinstance(held, dict) and isinstance(held.get("uid"), int):
                    self._uids[job_file.parent.name] = held["uid"]

    def _pool(self, job: Job) -> PoolSpec | None:
        label = job.pool_cpi.rsplit("/", 1)[-1]
        return next((p for p in self._pools if p.label == label), None)

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` as each runner started from now on exits; and from now on keep one
        runner started ahead, its interpreter and imports loaded, waiting for its job."""
        self._wake = wake
        self._keep_spare = True
        self._refill()

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        # A thread per running job: the agent learns of the end at once, not a poll later
        # (most short tasks end within the first poll interval). It also starts the next
        # spare as this one takes its job, not when the job ends: a task submitted right
        # after a short one then finds a runner done importing; here rather than in
        # ``submit`` so that the agent need not wait for the fork. At most one spare is
        # ever kept (``_refill`` starts none while one is alive).
        try:
            self._refill()
        except OSError:  # no fork now (EAGAIN, ENOMEM): the job's end must still wake us
            log.exception("could not start a spare runner")
        proc.wait()
        self._wake()
        self._refill()  # normally a no-op; here when the spare died meanwhile

    def image_runtime(self, job: Job) -> str | None:
        """The first runtime the job's pool declares (docs/tes.md, Containers)."""
        pool = self._pool(job)
        return choose_runtime(pool.software.container_runtimes) if pool else None

    def pools(self) -> list[PoolSpec]:
        """The host's pools (one per accelerator model)."""
        return list(self._pools)

    def _dir(self, job: Job) -> Path:
        return self.jobs_dir / job.key

    def submit(self, job: Job) -> None:
        """Write the job down, then start its runner detached from the gateway."""
        jobdir = self._dir(job)
        if (jobdir / "runner.pid").exists():
            return  # already started: a resent lease must not run the task twice
        jobdir.mkdir(parents=True, exist_ok=True)
        task_box = None
        if self.sandbox is not None:
            task_box = self.sandbox.for_task(self._take_uid(job.key))
        devices = self._take_devices(job)
        vendor = self._vendor.get(job.pool_cpi.rsplit("/", 1)[-1])
        devices_env = (
            None if vendor is None else VISIBLE_DEVICES_ENV.get(vendor, "CUDA_VISIBLE_DEVICES")
        )
        write_json(
            jobdir / "job.json",
            {
                **job.to_json(),
                "devices": devices,
                "devices_env": devices_env,
                "container_runtime": self.image_runtime(job),
                "sandbox": task_box.to_json() if task_box else None,
                "egress": pool.egress if (pool := self._pool(job)) else [],
                "egress_forbid": list(self.egress_forbid),
            },
        )
        # Secrets go down the runner's stdin, never into a file or its command line.
        order = json.dumps({"dir": str(jobdir), "secrets": job.secrets}).encode() + b"\n"
        with self._lock:
            spare, self._spare = self._spare, None
        proc = spare if spare is not None and spare.poll() is None else self._spawn()
        if proc is spare and self._nice_spares:
            # The job runs at the gateway's own priority (from the spare's first instruction
            # on, if it is still loading Python).
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
            except OSError:  # not allowed after all: this job gets a runner of its own
                log.warning("cannot raise a spare runner's priority; spares stay at ours")
                self._nice_spares = False
                proc.kill()
                proc.wait()
                proc = self._spawn()
        try:
            self._hand(proc, order)
        except OSError:  # the spare died meanwhile: start a runner for this job
            proc = self._spawn()
            self._hand(proc, order)
        (jobdir / "runner.pid").write_text(str(proc.pid))
        self._children[job.key] = proc
        threading.Thread(target=self._await_exit, args=(proc,), daemon=True).start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """A runner process, detached from the gateway, that waits for its job on stdin."""
        with (self.jobs_dir / "runner.log").open("ab") as log:
            return subprocess.Popen(
                RUNNER,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )

    @staticmethod
    def _hand(proc: subprocess.Popen[bytes], order: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(order)
        proc.stdin.close()

    def _refill(self) -> None:
        """Start a spare runner if the agent wants one kept and there is none alive."""
        with self._lock:
            if self._keep_spare and (self._spare is None or self._spare.poll() is not None):
                self._spare = self._spawn()
                if self._nice_spares:
                    # After the fork, not in it: a preexec hook would rule out vfork.
                    own = os.getpriority(os.PRIO_PROCESS, 0)
                    with contextlib.suppress(OSError):
                        os.setpriority(os.PRIO_PROCESS, self._spare.pid, min(19, own + SPARE_NICE))

    def _take_uid(self, key: str) -> int:
        """A uid from the range that no other job holds and no process runs as (one left
        by a crash would otherwise share it)."""
        assert self.sandbox is not None
        if key in self._uids:
            return self._uids[key]
        held = set(self._uids.values())
        running = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    running.add(entry.stat().st_uid)
        for uid in self.sandbox.uids():
            if uid not in held and uid not in running:
                self._uids[key] = uid
                return uid
        raise CapacityUnavailable(f"every task uid ({self.sandbox.first_uid}-...) is in use")

    def _take_devices(self, job: Job) -> list[int]:
        """Reserve the job's cards: distinct GPU indices of its pool."""
        need = job.spec.resources.need().accelerators
        label = job.pool_cpi.rsplit("/", 1)[-1]
        free = sorted(self._free_devices.get(label, ()))
        if need == 0 or label not in self._free_devices:
            return []
        if len(free) < need:
            raise CapacityUnavailable(
                f"pool {label} has {len(free)} free GPUs, the task needs {need}"
            )
        taken = free[:need]
        self._free_devices[label].difference_update(taken)
        self._held[job.key] = (label, taken)
        return taken

    def _runner_alive(self, job: Job) -> bool:
        proc = self._children.get(job.key)
        if proc is not None:
            return proc.poll() is None
        try:
            pid = int((self._dir(job) / "runner.pid").read_text())
        except (OSError, ValueError):
            return False
        return _alive(pid)

    @staticmethod
    def _read(path: Path) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def replica_socket(self, job: Job) -> Path | None:
        """The job's socket in the gateway's ``sockets`` directory, while the runner's
        bridge holds it."""
        if job.spec.service is None:
            return None
        path = replica_socket_path(self.jobs_dir.parent, job.key)
        # A runner killed outright leaves the file of a socket nothing listens on.
        return path if path.is_socket() and self._runner_alive(job) else None

    def status(self, job: Job) -> JobStatus:
        """Read the runner's outcome, or its progress while it runs."""
        jobdir = self._dir(job)
        result = self._read(jobdir / "result.json")
        if result is None:
            if self._runner_alive(job):
                if job.key in self._cancel_at and time.monotonic() > self._cancel_at[job.key]:
                    self._force_cancel(job)
                    return self.status(job)
                progress = self._read(jobdir / "status.json")
                state = TaskState.RUNNING if progress else TaskState.INITIALIZING
                return self._to_status(progress or {}, state)
            # Re-read: the runner may have finished between the two checks.
            result = self._read(jobdir / "result.json")
            if result is None:
                progress = self._read(jobdir / "status.json") or {}
                if job.key in self._cancel_at:  # it died of our cancel before it could say so
                    return self._to_status(progress, TaskState.CANCELED, "canceled")
                return self._to_status(
                    progress, TaskState.SYSTEM_ERROR, "the runner process died without a result"
                )
        return self._to_status(result, TaskState(str(result["state"])))

    @staticmethod
    def _to_status(data: dict[str, object], state: TaskState, message: str = "") -> JobStatus:
        raw = data.get("executors")
        outputs = data.get("outputs")
        outputs = outputs if isinstance(outputs, list) else []
        executors = [
            ExecutorStatus(
                index=int(e["index"]),
                start_time=_time(e.get("start_time")),
                end_time=_time(e.get("end_time")),
                exit_code=e.get("exit_code"),
            )
            for e in (raw if isinstance(raw, list) else [])
        ]
        return JobStatus(
            state=state,
            executors=executors,
            message=message or str(data.get("message") or ""),
            wall_s=Decimal(str(data.get("wall_s") or 0)),
            outputs=[o for o in outputs if isinstance(o, dict)] if state.terminal else [],
        )

    def cancel(self, job: Job) -> None:
        """Ask the runner to stop its executor; force it if it has not after a grace period."""
        self._cancel_at.setdefault(job.key, time.monotonic() + CANCEL_FORCE_AFTER_S)
        with contextlib.suppress(OSError, ValueError):
            pid = int((self._dir(job) / "runner.pid").read_text())
            os.kill(pid, signal.SIGTERM)

    def _force_cancel(self, job: Job) -> None:
        jobdir = self._dir(job)
        progress = self._read(jobdir / "status.json") or {}
        pgid = progress.get("pgid")
        if isinstance(pgid, int):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((jobdir / "runner.pid").read_text()), signal.SIGKILL)
        if self.sandbox is not None:
            TaskCgroup(job.key).kill()
        runtime = self.image_runtime(job)
        if runtime is not None:  # the runner died: its containers may still run
            for index, ex in enumerate(job.spec.executors):
                if ex.image:
                    remove_container(runtime, container_name(job.key, index))
        if job.spec.service is not None:  # its bridge died with the cgroup: no one listens
            replica_socket_path(self.jobs_dir.parent, job.key).unlink(missing_ok=True)
        progress.update(state="CANCELED", message="canceled (forced)")
        with contextlib.suppress(FileNotFoundError):  # the job was forgotten meanwhile
            write_json(jobdir / "result.json", progress)

    def read_log(self, job: Job, index: int, stream: str, offset: int, limit: int) -> bytes:
        """Bytes of an executor's output file from ``offset``."""
        return read_output(self._dir(job), index, stream, offset, limit)

    def recover(self) -> list[Job]:
        """Jobs whose directories survive from an earlier gateway process."""
        jobs = []
        for jobdir in sorted(self.jobs_dir.iterdir()):
            data = self._read(jobdir / "job.json")
            if data is not None:
                job = Job.from_json(data)
                devices = data.get("devices")
                label = job.pool_cpi.rsplit("/", 1)[-1]
                if isinstance(devices, list) and devices and label in self._free_devices:
                    self._free_devices[label].difference_update(devices)
                    self._held[job.key] = (label, devices)
                jobs.append(job)
        return jobs

    def forget(self, job: Job) -> None:
        """Delete the job's directory once the node has its final report (or lost it)."""
        if not (self._dir(job) / "result.json").exists() or self._runner_alive(job):
            # Unfinished (runner alive, or died mid-run): kill what it left running.
            self._force_cancel(job)
        proc = self._children.pop(job.key, None)
        if proc is not None:
            proc.wait(timeout=5)
        self._cancel_at.pop(job.key, None)
        held = self._held.pop(job.key, None)
        if held is not None:
            self._free_devices[held[0]].update(held[1])
        shutil.rmtree(self._dir(job), ignore_errors=True)
        if self.sandbox is not None:
            TaskCgroup(job.key).remove()
            # rmtree never follows a link, so what the task left can only remove itself.
            shutil.rmtree(self.sandbox.root / job.key, ignore_errors=True)
            self._uids.pop(job.key, None)  # last: nothing of the task holds it any more
