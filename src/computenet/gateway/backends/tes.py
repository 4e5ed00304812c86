"""The TES backend: forwards tasks to any GA4GH TES 1.1 service and maps its states back.

The remote service may be a ComputeNet node (ours honours the accelerator and time-limit
extensions in ``resources.backend_parameters`` and the ``Idempotency-Key`` header), Funnel,
TESK or anything else speaking TES 1.1. Each attempt gets ``state_dir/jobs/<key>/remote.json``
holding the job and the remote task id, so a restarted gateway finds its tasks again and a
resent lease never creates a second remote task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from computenet.gateway.backends.base import (
    Backend,
    BackendAuthError,
    BackendDown,
    BackendError,
    Capability,
    CapacityUnavailable,
    ExecutorStatus,
    Job,
    JobStatus,
)
from computenet.gateway.backends.local_runner import write_json
from computenet.model.pool import PoolSpec, Region
from computenet.model.task import TaskState
from computenet.model.tes_params import resource_parameters

log = logging.getLogger("computenet.gateway.tes")

TES_PATH = "/ga4gh/tes/v1"
DEFAULT_IMAGE = "alpine"
FULL_VIEW_CACHE_S = 0.5
STREAMS = ("stdout", "stderr")
MESSAGE_LINES = 3
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\S+\s+")

# Remote TES state -> our state. UNKNOWN (and anything a newer spec adds) keeps the last known.
STATE_MAP: dict[str, TaskState] = {
    "QUEUED": TaskState.INITIALIZING,
    "INITIALIZING": TaskState.INITIALIZING,
    "RUNNING": TaskState.RUNNING,
    "PAUSED": TaskState.RUNNING,
    "CANCELING": TaskState.RUNNING,  # its processes may still run: not canceled until CANCELED
    "COMPLETE": TaskState.COMPLETE,
    "EXECUTOR_ERROR": TaskState.EXECUTOR_ERROR,
    "SYSTEM_ERROR": TaskState.SYSTEM_ERROR,
    "PREEMPTED": TaskState.SYSTEM_ERROR,
    "CANCELED": TaskState.CANCELED,
}
_REMOTE_FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "PREEMPTED", "CANCELED"}


@dataclass
class _Full:
    """A FULL view of a remote task, with its logs encoded once."""

    expires: float  # monotonic time; +inf once the remote task is final
    task: dict[str, Any]
    encoded: dict[tuple[int, str], bytes] = field(default_factory=dict)


def _time(value: object) -> datetime | None:
    """An RFC 3339 time as an aware datetime (naive times are taken as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _detail(resp: httpx.Response) -> str:
    """A short reason from an error response."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("msg") or body.get("detail") or body)[:200]
    return str(body)[:200]


def _last_log(task: dict[str, Any]) -> dict[str, Any]:
    """The task log of the remote's current attempt (TES keeps one per attempt)."""
    logs = task.get("logs")
    if isinstance(logs, list) and logs and isinstance(logs[-1], dict):
        return logs[-1]
    return {}


class TesBackend(Backend):
    """Runs jobs as tasks on a remote GA4GH TES 1.1 service at ``<url>/ga4gh/tes/v1``."""

    name = "tes"
    runs_images = True  # the remote service runs each executor in its image

    def __init__(
        self,
        state_dir: Path,
        *,
        url: str,
        token: str | None = None,
        label: str = "tes",
        pool: PoolSpec | None = None,
        region: Region | None = None,
        default_image: str = DEFAULT_IMAGE,
        backend_parameters: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.client_id = self._client_id(state_dir / "tes-client-id")
        base = url.rstrip("/")
        self.url = base if base.endswith(TES_PATH) else base + TES_PATH
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        if pool is None:
            # TES 1.1 cannot describe capacity: assume little, so only small tasks come here.
            log.warning("no pool given for TES service %s: offering 1 core, 1 GiB", self.url)
            pool = PoolSpec(label=label, cpu_cores=1, memory_mib=1024)
        update: dict[str, Any] = {"backend": "tes"}
        if region is not None:
            update["region"] = region
        self._pool = pool.model_copy(update=update)
        self.default_image = default_image
        self.backend_parameters = dict(backend_parameters or {})
        self._lock = threading.Lock()
        self._full: dict[str, _Full] = {}
        self._last: dict[str, TaskState] = {}
        self._records: dict[str, dict[str, Any]] = {}  # remote.json of each job
        self._service: dict[str, Any] | None = None

    @staticmethod
    def _client_id(path: Path) -> str:
        """A random id of this state dir: idempotency keys of two gateways never collide."""
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(uuid.uuid4().hex)
            os.replace(tmp, path)
            return path.read_text().strip()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # ---- HTTP -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; unreachable or failing service -> BackendDown, 401/403 -> auth error."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendDown(f"TES service {self.url} unreachable: {exc!r}") from None
        code = resp.status_code
        if code in (401, 403):
            raise BackendAuthError(f"TES service {self.url} refused our credentials: HTTP {code}")
        if code >= 500:
            raise BackendDown(f"TES service {self.url} failed: HTTP {code} {_detail(resp)}")
        if code == 429:
            raise CapacityUnavailable(f"TES service {self.url} is overloaded: HTTP 429")
        return resp

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code not in (200, 201):
            raise BackendError(f"TES {what} on {self.url}: HTTP {resp.status_code} {_detail(resp)}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BackendError(
                f"TES {what} on {self.url} answered something that is not a JSON object"
            )
        return body

    def _service_info(self, refresh: bool = False) -> dict[str, Any]:
        if self._service is None or refresh:
            self._service = self._json(self._request("GET", "/service-info"), "service-info")
        return self._service

    def _task_path(self, remote_id: str) -> str:
        return f"/tasks/{quote(remote_id, safe='')}"

    def _get(self, remote_id: str, view: str) -> dict[str, Any] | None:
        """GetTask at ``view``; None when the remote no longer knows the task."""
        resp = self._request("GET", self._task_path(remote_id), params={"view": view})
        return None if resp.status_code == 404 else self._json(resp, f"task {remote_id}")

    # ---- contract -------------------------------------------------------------------

    def check(self) -> None:
        """Service-info answers and our token may list tasks."""
        self._service_info(refresh=True)
        self._json(
            self._request("GET", "/tasks", params={"view": "MINIMAL", "page_size": 1}), "list"
        )

    def unsupported(self) -> dict[Capability, str]:
        """GPUs and time limits only where the remote announces our backend_parameters."""
        try:
            announced = self._service_info().get("tesResources_backend_parameters")
            params = {str(p).lower() for p in announced} if isinstance(announced, list) else set()
            why = "the remote does not announce"
        except BackendError as exc:
            params, why = set(), f"service-info failed ({exc.message}), so no remote announces"
        out: dict[Capability, str] = {}
        if self._pool.accelerator is None:
            out[Capability.GPUS] = "the operator's pool for this TES service has no accelerators"
        elif "accelerator_count" not in params:
            out[Capability.GPUS] = f"TES 1.1 has no GPU field and {why} accelerator_count"
        if "time_limit_s" not in params:
            out[Capability.TIME_LIMIT] = f"TES 1.1 has no time limit and {why} time_limit_s"
        out[Capability.FULL_LOGS] = (
            "TES 1.1 returns executor output only as text in the FULL view, which servers "
            "truncate (a ComputeNet node keeps the last 1 MiB of each stream)"
        )
        out[Capability.SERVICES] = "a remote TES task has no port the gateway can reach"
        return out

    def pools(self) -> list[PoolSpec]:
        """The pool the operator declared: TES 1.1 does not describe a service's capacity."""
        return [self._pool]

    def _dir(self, job: Job) -> Path:
        return self.jobs_dir / job.key

    def to_tes(self, job: Job) -> dict[str, Any]:
        """The TES task for a job; our extensions ride in ``resources.backend_parameters``."""
        spec, r = job.spec, job.spec.resources
        params = {**self.backend_parameters, **resource_parameters(r)}
        optional: dict[str, Any] = {
            "disk_gb": r.disk_gb,
            "preemptible": r.preemptible,
            "zones": r.zones or None,
        }
        resources: dict[str, Any] = {"cpu_cores": r.cpu_cores, "ram_gb": r.ram_gb}
        resources.update({k: v for k, v in optional.items() if v is not None})
        if params:
            resources["backend_parameters"] = params
        task: dict[str, Any] = {
            "name": spec.name or f"computenet {job.key}",
            "executors": [
                {
                    **e.model_dump(mode="json", exclude_none=True),
                    "image": e.image or self.default_image,
                }
                for e in spec.executors
            ],
            "resources": resources,
            "tags": {
                **spec.tags,
                "computenet.task_id": job.task_id,
                "computenet.attempt": str(job.attempt),
            },
        }
        # Inputs, outputs and volumes are the remote's to stage, as TES defines them.
        rest = spec.model_dump(
            mode="json", exclude_none=True, include={"description", "inputs", "outputs", "volumes"}
        )
        task.update({k: v for k, v in rest.items() if v})
        return task

    def submit(self, job: Job) -> None:
        """Create the remote task once per ``job.key``; remember its id beside the job."""
        jobdir = self._dir(job)
        if (jobdir / "remote.json").exists():
            return  # already created: a resent lease must not run the task twice
        no_gpus = self.unsupported().get(Capability.GPUS)
        if job.spec.resources.need().accelerators and no_gpus:
            raise CapacityUnavailable(no_gpus)
        # The key makes a retry after a lost reply find the first task on a ComputeNet node.
        headers = {"Idempotency-Key": f"computenet-{self.client_id}-{job.key}"}
        resp = self._request("POST", "/tasks", json=self.to_tes(job), headers=headers)
        code = resp.status_code
        if code in (404, 405):
            raise BackendDown(f"no TES API at {self.url}: CreateTask answered HTTP {code}")
        record: dict[str, Any] = {"url": self.url, "job": job.to_json()}
        if 400 <= code < 500:
            # The remote refuses this task's content: the attempt fails, the backend is fine.
            record["refused"] = f"the TES service refused the task: HTTP {code} {_detail(resp)}"
        else:
            remote_id = self._json(resp, "CreateTask").get("id")
            if not isinstance(remote_id, str) or not remote_id:
                raise BackendError(f"TES service {self.url} created a task but sent no id")
            record["remote_id"] = remote_id
        jobdir.mkdir(parents=True, exist_ok=True)
        write_json(jobdir / "remote.json", record)
        self._records[job.key] = record

    def _remote_id(self, job: Job) -> str | None:
        """The remote task id from ``remote.json``; None when the remote refused the task."""
        record = self._records.get(job.key)
        if record is None:
            try:
                record = json.loads((self._dir(job) / "remote.json").read_text())
            except (OSError, ValueError):
                record = None
            if not isinstance(record, dict):
                raise BackendError(f"job {job.key} was never created on {self.url}")
            self._records[job.key] = record
        remote_id = record.get("remote_id")
        return remote_id if isinstance(remote_id, str) else None

    def _full_view(self, job: Job, remote_id: str, final: bool = False) -> _Full | None:
        """The FULL view, fetched at most every FULL_VIEW_CACHE_S and never again once final.

        With ``final``, a cached view taken while the task still ran is not good enough.
        """
        with self._lock:
            cached = self._full.get(job.key)
        if cached is not None and (
            cached.expires == math.inf or (not final and cached.expires > time.monotonic())
        ):
            return cached
        task = self._get(remote_id, "FULL")
        if task is None:
            return None
        done = str(task.get("state")) in _REMOTE_FINAL
        entry = _Full(math.inf if done else time.monotonic() + FULL_VIEW_CACHE_S, task)
        with self._lock:
            self._full[job.key] = entry
        return entry

    def status(self, job: Job) -> JobStatus:
        """GetTask (BASIC while it runs, FULL once final) mapped to our states."""
        remote_id = self._remote_id(job)
        if remote_id is None:
            self._last[job.key] = TaskState.SYSTEM_ERROR
            return JobStatus(TaskState.SYSTEM_ERROR, message=str(self._records[job.key]["refused"]))
        with self._lock:
            cached = self._full.get(job.key)
        task = cached.task if cached is not None and cached.expires == math.inf else None
        task = task or self._get(remote_id, "BASIC")
        if task is None:
            self._last[job.key] = TaskState.SYSTEM_ERROR
            return JobStatus(TaskState.SYSTEM_ERROR, message=f"remote task {remote_id} is gone")
        remote = str(task.get("state") or "UNKNOWN")
        state = STATE_MAP.get(remote)
        message = ""
        if state is None:
            state = self._last.get(job.key, TaskState.INITIALIZING)
            message = f"remote task {remote_id} is {remote}; keeping {state.value}"
        elif state.terminal:
            # FULL carries system_logs (the reason) and serves the final logs from now on.
            full = self._full_view(job, remote_id, final=True)
            task = full.task if full is not None else task
            message = self._message(remote_id, remote, task)
        self._last[job.key] = state
        return self._to_status(task, state, message)

    @staticmethod
    def _message(remote_id: str, remote: str, task: dict[str, Any]) -> str:
        """Why a task did not complete: "remote preempted" etc. and the remote's last words."""
        if remote == "COMPLETE":
            return ""
        # The reason sits in the last system log lines; drop their leading timestamps.
        raw = _last_log(task).get("system_logs")
        lines = [_STAMP.sub("", str(x))[:300] for x in (raw if isinstance(raw, list) else [])]
        why = "; ".join(lines[-MESSAGE_LINES:])
        return f"remote {remote.lower().replace('_', ' ')} (TES task {remote_id})" + (
            f": {why}" if why else ""
        )

    @staticmethod
    def _to_status(task: dict[str, Any], state: TaskState, message: str) -> JobStatus:
        last = _last_log(task)
        executors = [
            ExecutorStatus(
                index=i,
                start_time=_time(e.get("start_time")),
                end_time=_time(e.get("end_time")),
                exit_code=e["exit_code"] if isinstance(e.get("exit_code"), int) else None,
            )
            for i, e in enumerate(last.get("logs") or [])
            if isinstance(e, dict)
        ]
        start = _time(last.get("start_time")) or next(
            (e.start_time for e in executors if e.start_time), None
        )
        ends = [e.end_time for e in executors if e.end_time]
        end = _time(last.get("end_time")) or (max(ends) if state.terminal and ends else None)
        wall = Decimal(0)
        if start is not None:
            seconds = ((end or datetime.now(UTC)) - start).total_seconds()
            wall = Decimal(str(round(max(0.0, seconds), 3)))
        return JobStatus(state=state, executors=executors, message=message, wall_s=wall)

    def read_log(self, job: Job, index: int, stream: str, offset: int, limit: int) -> bytes:
        """Bytes of the text the remote keeps in the FULL view (often only a tail)."""
        if stream not in STREAMS or index < 0:
            return b""
        remote_id = self._remote_id(job)
        full = None if remote_id is None else self._full_view(job, remote_id)
        if full is None:
            return b""
        data = full.encoded.get((index, stream))
        if data is None:
            execs = _last_log(full.task).get("logs") or []
            entry = execs[index] if index < len(execs) and isinstance(execs[index], dict) else {}
            data = str(entry.get(stream) or "").encode("utf-8")
            full.encoded[(index, stream)] = data
        return data[offset : offset + limit]

    def cancel(self, job: Job) -> None:
        """CancelTask; a 4xx (already finished, gone) means nothing is left to stop."""
        try:
            remote_id = self._remote_id(job)
        except BackendError:
            return  # never created: nothing to stop
        if remote_id is None:
            return  # refused: nothing runs
        resp = self._request("POST", f"{self._task_path(remote_id)}:cancel")
        if resp.status_code >= 400:
            log.info("cancel of %s on %s: HTTP %s", remote_id, self.url, resp.status_code)

    def recover(self) -> list[Job]:
        """Jobs whose ``remote.json`` survives from an earlier gateway process."""
        jobs = []
        for jobdir in sorted(self.jobs_dir.iterdir()):
            try:
                record = json.loads((jobdir / "remote.json").read_text())
                job = Job.from_json(record["job"])
                self._records[job.key] = record
            except (OSError, ValueError, KeyError, TypeError):
                continue
            jobs.append(job)
        return jobs

    def forget(self, job: Job) -> None:
        """Drop the job's directory; stop the remote task first unless it is known final."""
        if not self._last.get(job.key, TaskState.UNKNOWN).terminal:
            with contextlib.suppress(BackendError):
                self.cancel(job)
        with self._lock:
            self._full.pop(job.key, None)
        self._last.pop(job.key, None)
        self._records.pop(job.key, None)
        shutil.rmtree(self._dir(job), ignore_errors=True)
