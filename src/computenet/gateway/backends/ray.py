"""The Ray backend: runs tasks as Ray jobs through the Ray Jobs REST API.

The gateway talks HTTP to the cluster's dashboard (``/api/jobs/``, ``/api/v0/nodes``), so it
needs no ``ray`` package itself. Each attempt is one Ray job, ``cn-<job key>``, whose
entrypoint is this module run as a program: it runs the job with the local backend's runner
(executors in order, each in its own process group, output to files, a time limit, the
outcome in ``result.json``), on the Ray node that Ray picks.

The job directory lives under the gateway's state dir and the Ray node reads and writes it,
so the gateway and the Ray nodes must share that path: one machine, or a shared filesystem
mounted at the same place on every node (see ``docs/ray.md``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from computenet.errors import InvalidInput
from computenet.gateway.backends.base import (
    Backend,
    BackendAuthError,
    BackendDown,
    BackendError,
    Capability,
    CapacityUnavailable,
    Job,
    JobStatus,
    read_job_file,
    read_output,
)
from computenet.gateway.backends.local import LocalBackend
from computenet.gateway.backends.local_runner import Runner, write_json
from computenet.gateway.probe import architecture_of
from computenet.model.catalog import load_catalog
from computenet.model.pool import Accelerator, PoolSpec, Region
from computenet.model.task import TaskState

ENTRYPOINT_MODULE = "computenet.gateway.backends.ray"
RUNNING_RAY_STATES = frozenset({"PENDING", "RUNNING"})
FORGET_WAIT_S = 6.0  # Ray SIGKILLs a stopped job's processes 3 s after SIGTERM
POOLS_CACHE_S = 30.0
_MIB = 2**20
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def _boot_id() -> str:
    """This machine's boot id: tells whether a job ran on the gateway's own host."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_job_file(path))  # the job writes here: no links followed
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RayBackend(Backend):
    """Runs jobs on a Ray cluster; job state lives under ``state_dir/jobs``."""

    name = "ray"

    def __init__(
        self,
        state_dir: Path,
        *,
        address: str,
        label: str = "ray",
        region: Region | None = None,
        price_per_core_hour: Decimal = Decimal(0),
        price_per_card_hour: Decimal = Decimal(0),
        python: str = "python",
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``address`` is the dashboard URL (``http://HOST:8265``); ``python`` is the
        interpreter the job entrypoint runs on the Ray node (it must import computenet)."""
        if "://" not in address:
            address = f"http://{address}"
        if not address.startswith(("http://", "https://")):
            raise InvalidInput(f"the Ray address must be the dashboard's http(s) URL: {address}")
        self.address = address.rstrip("/")
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.region = region or Region(code="11")
        self.prices = (price_per_core_hour, price_per_card_hour)
        self.python = python
        self._http = httpx.Client(
            base_url=self.address,
            timeout=timeout_s,
            headers=dict(headers or {}),
            transport=transport,
        )
        self._pools: tuple[float, PoolSpec] | None = None

    def unsupported(self) -> dict[Capability, str]:
        """Replicas need a socket the gateway owns on the machine they run on; a Ray job
        runs wherever the cluster puts it."""
        return {Capability.SERVICES: "a Ray job runs where the gateway cannot reach its port"}

    # ---- HTTP ------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the Jobs API; unreachable → BackendDown, refused → BackendAuthError."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendDown(f"Ray at {self.address} does not answer: {exc}") from None
        if resp.status_code in (401, 403):
            raise BackendAuthError(f"Ray at {self.address} refused us: HTTP {resp.status_code}")
        if resp.status_code >= 500 and "already exists" not in resp.text:
            raise BackendDown(f"Ray at {self.address}: HTTP {resp.status_code} on {path}")
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._call(method, path, **kwargs)
        if resp.status_code != 200:
            raise BackendError(f"Ray at {self.address}: HTTP {resp.status_code} on {path}")
        try:
            return resp.json()
        except ValueError:
            raise BackendDown(f"Ray at {self.address} sent no JSON for {path}") from None

    @staticmethod
    def _path(job: Job, suffix: str = "") -> str:
        return f"/api/jobs/{quote('cn-' + job.key, safe='')}{suffix}"

    def _info(self, job: Job) -> dict[str, Any] | None:
        """Ray's record of the job, or None when Ray has none."""
        resp = self._call("GET", self._path(job))
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise BackendError(f"Ray at {self.address}: HTTP {resp.status_code} reading a job")
        try:
            data = resp.json()
        except ValueError:
            raise BackendDown(f"Ray at {self.address} sent no JSON for a job") from None
        return data if isinstance(data, dict) else None

    # ---- the contract ----------------------------------------------------------------

    def check(self) -> None:
        """Ask the dashboard for its version."""
        if "ray_version" not in self._json("GET", "/api/version"):
            raise BackendDown(f"{self.address} does not look like a Ray dashboard")

    def pools(self) -> list[PoolSpec]:
        """The cluster as one pool, per machine: the smallest alive node (of those with GPUs,
        when some have them), so anything that fits the description fits every node."""
        data = self._json("GET", "/api/v0/nodes", params={"limit": 10000, "detail": "false"})
        try:
            rows = data["data"]["result"]["result"]
            alive: list[dict[str, Any]] = [
                n["resources_total"]
                for n in rows
                if n.get("state") == "ALIVE" and n["resources_total"].get("CPU", 0) >= 1
            ]
        except (KeyError, TypeError, AttributeError):
            raise BackendDown(f"Ray at {self.address} sent an unexpected node list") from None
        if not alive:
            raise BackendDown(f"Ray at {self.address} has no alive node with CPUs")
        with_gpus = [r for r in alive if r.get("GPU", 0) >= 1]
        chosen = with_gpus or alive
        accelerator = None
        if with_gpus:
            accelerator = self._accelerator(chosen, int(min(r["GPU"] for r in chosen)))
        version = self._json("GET", "/api/version").get("ray_version", "")
        spec = PoolSpec(
            label=self.label,
            backend="ray",
            architecture=architecture_of(platform.machine()),  # Ray does not report it
            cpu_cores=max(1, int(min(r["CPU"] for r in chosen))),
            memory_mib=max(1, int(min(r.get("memory", 0) for r in chosen) // _MIB)),
            machines=len(chosen),
            accelerator=accelerator,
            region=self.region,
            price_per_core_hour=self.prices[0],
            price_per_card_hour=self.prices[1],
            labels={"ray_version": str(version)} if version else {},
        )
        self._pools = (time.monotonic(), spec)
        return [spec]

    @staticmethod
    def _accelerator(nodes: list[dict[str, Any]], count: int) -> Accelerator:
        """Ray names a GPU model with an ``accelerator_type:<X>`` resource; look X up."""
        types = {k.split(":", 1)[1] for r in nodes for k in r if k.startswith("accelerator_type:")}
        name = types.pop() if len(types) == 1 else ""
        catalog = load_catalog()
        # Ray says "A100-80G" where the catalog knows "A100-80GB".
        info = catalog.resolve(name) or catalog.resolve(f"{name}B") if name else None
        if info is None:  # unnamed, mixed or not in the catalog: named as the probe does
            slug = _NON_SLUG.sub("-", name.lower()).strip("-").removeprefix("nvidia-")
            model = f"nvidia-unknown-{slug}"[:64].rstrip("-")
            return Accelerator(vendor="nvidia", model=model, memory_mib=0, count=count)
        memory = int(info.memory_gib * 1024) if info.memory_gib is not None else 0
        return Accelerator(vendor=info.vendor, model=info.model, memory_mib=memory, count=count)

    def _dir(self, job: Job) -> Path:
        return self.jobs_dir / job.key

    def submit(self, job: Job) -> None:
        """Write the job down, then submit it as Ray job ``cn-<key>`` (a second submit finds
        it there and does nothing)."""
        jobdir = self._dir(job)
        jobdir.mkdir(parents=True, exist_ok=True)
        if not (jobdir / "job.json").exists():
            write_json(jobdir / "job.json", job.to_json())
        if self._info(job) is not None:
            return
        need = job.spec.resources.need()
        cached = self._pools
        pool = cached[1] if cached and time.monotonic() - cached[0] < POOLS_CACHE_S else None
        pool = pool or self.pools()[0]
        cards = pool.accelerator.count if pool.accelerator else 0
        if not (
            need.cpu_cores <= pool.cpu_cores
            and need.memory_mib <= pool.memory_mib
            and need.accelerators <= cards
        ):
            raise CapacityUnavailable(
                f"no Ray node has {need.cpu_cores} CPUs, {need.memory_mib} MiB and "
                f"{need.accelerators} GPUs (largest fit: {pool.cpu_cores} CPUs, "
                f"{pool.memory_mib} MiB, {cards} GPUs)"
            )
        body = {
            "submission_id": f"cn-{job.key}",
            "entrypoint": " ".join(
                shlex.quote(w)
                for w in (self.python, "-m", ENTRYPOINT_MODULE, str(jobdir.resolve()))
            ),
            "entrypoint_num_cpus": need.cpu_cores,
            "entrypoint_num_gpus": need.accelerators,
            "entrypoint_memory": need.memory_mib * _MIB,
            "metadata": {"task_id": job.task_id, "attempt": str(job.attempt)},
        }
        resp = self._call("POST", "/api/jobs/", json=body)
        if resp.status_code != 200 and "already exists" not in resp.text:
            raise BackendError(f"Ray refused the job: HTTP {resp.status_code}: {resp.text[:300]}")

    def status(self, job: Job) -> JobStatus:
        """The runner's outcome once written; until then Ray's view of the job."""
        jobdir = self._dir(job)
        result = _read(jobdir / "result.json")
        if result is not None:
            return self._status(result, TaskState(str(result["state"])))
        info = self._info(job)
        canceled = (jobdir / "canceled").exists()
        state = str(info["status"]) if info else ""
        progress = _read(jobdir / "status.json")
        if state in RUNNING_RAY_STATES and not (canceled and state == "PENDING"):
            running = state == "RUNNING" and progress is not None
            return self._status(progress, TaskState.RUNNING if running else TaskState.INITIALIZING)
        # Ended (or never started): leave nothing behind on this host, then say how.
        self._sweep(job)
        result = _read(jobdir / "result.json")  # it may have finished since the first look
        if result is not None:
            return self._status(result, TaskState(str(result["state"])))
        if canceled or state == "STOPPED":
            return self._status(progress, TaskState.CANCELED, "canceled")
        if info is None:
            why = "Ray has no record of this job (was the cluster restarted?)"
        elif state == "SUCCEEDED":
            why = "the Ray job ended without the runner's result"
        else:
            why = f"the Ray job {state.lower()}: {info.get('message') or ''}{self._log_tail(job)}"
        return self._status(progress, TaskState.SYSTEM_ERROR, why)

    @staticmethod
    def _status(data: dict[str, Any] | None, state: TaskState, message: str = "") -> JobStatus:
        # Same file formats as the local backend's runner.
        return LocalBackend._to_status(data or {}, state, message)

    def _log_tail(self, job: Job) -> str:
        """The end of the entrypoint's own output (Ray's job log), to explain a failure."""
        with contextlib.suppress(BackendError, ValueError):
            resp = self._call("GET", self._path(job, "/logs"))
            logs = str(resp.json().get("logs") or "").strip() if resp.status_code == 200 else ""
            return f"; log: ...{logs[-500:]}" if logs else ""
        return ""

    def _sweep(self, job: Job) -> None:
        """Kill what an ended job left in its executor's process group, when it ran here."""
        jobdir = self._dir(job)
        node = _read(jobdir / "node.json") or {}
        progress = _read(jobdir / "status.json") or {}
        pgid = progress.get("pgid")
        if node.get("boot_id") == _boot_id() and isinstance(pgid, int) and pgid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)

    def cancel(self, job: Job) -> None:
        """Mark the job canceled and ask Ray to stop it (SIGTERM to the runner and every
        process under it, SIGKILL 3 s later). Idempotent."""
        jobdir = self._dir(job)
        if jobdir.exists():
            (jobdir / "canceled").touch()
        info = self._info(job)
        if info is not None and info.get("status") in RUNNING_RAY_STATES:
            self._call("POST", self._path(job, "/stop"))

    def read_log(self, job: Job, index: int, stream: str, offset: int, limit: int) -> bytes:
        """Bytes of an executor's output file from ``offset``."""
        return read_output(self._dir(job), index, stream, offset, limit)

    def recover(self) -> list[Job]:
        """Jobs whose directories survive from an earlier gateway process."""
        jobs = []
        for jobdir in sorted(self.jobs_dir.iterdir()):
            data = _read(jobdir / "job.json")
            if data is not None:
                jobs.append(Job.from_json(data))
        return jobs

    def forget(self, job: Job) -> None:
        """Stop the job if it still runs, drop Ray's record of it and delete its directory.
        Ray being unreachable does not stop the local clean-up; a job that starts later
        finds no directory and exits without running anything."""
        with contextlib.suppress(BackendDown):
            self.cancel(job)
            deadline = time.monotonic() + FORGET_WAIT_S
            info = self._info(job)
            while info is not None and info.get("status") in RUNNING_RAY_STATES:
                if info.get("status") == "PENDING" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
                info = self._info(job)
            if info is not None and info.get("status") not in RUNNING_RAY_STATES:
                self._call("DELETE", self._path(job))
        self._sweep(job)
        shutil.rmtree(self._dir(job), ignore_errors=True)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()


# ---- the job entrypoint, run by Ray on the node ----------------------------------------


def _visible_devices(value: str | None) -> list[int | str]:
    """The GPUs Ray gave the entrypoint (``CUDA_VISIBLE_DEVICES``), as runner devices."""
    words = [w.strip() for w in (value or "").split(",") if w.strip()]
    return [int(w) if w.isdigit() else w for w in words]


def main(argv: list[str]) -> int:
    """Entry point of a Ray job: run the job in ``argv[1]`` with the local runner, on the
    GPUs Ray assigned (the runner passes the job only its ``devices``)."""
    if len(argv) != 2:
        print("usage: python -m computenet.gateway.backends.ray JOBDIR", file=sys.stderr)
        return 2
    jobdir = Path(argv[1])
    job = _read(jobdir / "job.json")
    if job is None:
        print(f"no job in {jobdir} (forgotten before it started)", file=sys.stderr)
        return 0
    if (jobdir / "canceled").exists():
        write_json(jobdir / "result.json", {"state": "CANCELED", "message": "canceled"})
        return 0
    write_json(jobdir / "node.json", {"boot_id": _boot_id(), "pid": os.getpid()})
    devices = _visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if devices:
        write_json(jobdir / "job.json", {**job, "devices": devices})
    Runner(jobdir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
