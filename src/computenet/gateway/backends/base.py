"""The adapter contract every backend implements: local host, Slurm, Ray, another TES service.

The gateway agent speaks only this contract, so every backend behaves the same to the node.
Methods are synchronous and quick; the agent calls them from worker threads.

Errors a backend raises tell the agent what to do:

- :class:`CapacityUnavailable`: the backend cannot take this job now; hand it back to the
  node to place elsewhere.
- :class:`BackendDown`: the backend (scheduler, API) is unreachable; mark its pools
  unhealthy and hand back jobs whose fate cannot be known.
- :class:`BackendAuthError`: the backend refuses our credentials; an operator must act.

A task's own failure is not an error: it is a :class:`JobStatus` in ``EXECUTOR_ERROR``.
"""

from __future__ import annotations

import errno
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from computenet.errors import ComputeNetError, InvalidInput
from computenet.model.pool import Capability as Capability  # re-exported for backends
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState


class BackendError(ComputeNetError):
    """A backend could not do what was asked (not the task's own failure)."""

    status_code = 503
    reason = "backend_error"


class CapacityUnavailable(BackendError):
    """No room for this job on this backend now: place it elsewhere."""

    reason = "capacity_unavailable"


class BackendDown(BackendError):
    """The backend cannot be reached: its pools are unavailable until it answers again."""

    reason = "backend_down"


class BackendAuthError(BackendError):
    """The backend refused our credentials."""

    reason = "backend_auth"


@dataclass(frozen=True)
class Job:
    """A leased task attempt as the backend sees it."""

    task_id: str
    attempt: int
    lease_id: str
    pool_cpi: str
    spec: TaskSpec
    # Environment variable -> secret value; held in memory only, never in ``to_json``.
    secrets: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # The gateway's own data URL policy (``UrlPolicy.to_json``), checked again where the data
    # is fetched: the node checked from its network, the fetch happens from this one.
    url_policy: dict[str, list[str]] | None = None

    @property
    def key(self) -> str:
        """A name unique per attempt, safe as a directory or job name."""
        return f"{self.task_id}.{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        """The form written beside the job so it can be recovered after a restart."""
        return {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "lease_id": self.lease_id,
            "pool_cpi": self.pool_cpi,
            "spec": self.spec.model_dump(mode="json"),
            "url_policy": self.url_policy,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Inverse of :meth:`to_json`."""
        return cls(
            task_id=data["task_id"],
            attempt=int(data["attempt"]),
            lease_id=data["lease_id"],
            pool_cpi=data["pool_cpi"],
            spec=TaskSpec.model_validate(data["spec"]),
            url_policy=data.get("url_policy"),
        )


@dataclass
class ExecutorStatus:
    """One executor's progress."""

    index: int
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None


@dataclass
class JobStatus:
    """What the backend knows of a job now."""

    state: TaskState
    executors: list[ExecutorStatus] = field(default_factory=list)
    message: str = ""
    wall_s: Decimal = Decimal(0)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # stored files, final only


def read_job_file(path: Path) -> str:
    """The text of a file in a job's directory that the job itself may have written (Slurm,
    Ray): never through a symlink, and only a regular file; raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path}: not a regular file")
        return f.read().decode(errors="replace")


def read_output(jobdir: Path, index: int, stream: str, offset: int, limit: int) -> bytes:
    """Bytes ``offset`` to ``offset + limit`` of executor ``index``'s ``stdout``/``stderr``
    file (``exec-<index>.<stream>``) in a job directory; empty when there is none (yet)."""
    if stream not in ("stdout", "stderr"):
        raise InvalidInput(f"unknown stream {stream!r}")
    # On Slurm and Ray the job itself writes these files, so one may have been swapped for a
    # symlink: never follow it, and read only a regular file.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(jobdir / f"exec-{index}.{stream}", flags)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return b""
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        f.seek(offset)
        return f.read(limit)


class Backend(ABC):
    """One provider backend behind a gateway."""

    name: str = "abstract"
    runs_images: bool = False  # executors run in their container image (else on the host)
    # Injects task secrets into executors at run time without writing them down anywhere.
    injects_secrets: bool = False
    # The node's addresses, which a pool's egress allow-list never opens (set by the agent).
    egress_forbid: tuple[str, ...] = ()

    def image_runtime(self, job: Job) -> str | None:
        """The container runtime this job's images run with here, if any."""
        return None

    def unsupported(self) -> dict[Capability, str]:
        """What this backend cannot do, each with the reason; empty when it does everything."""
        return {}

    def check(self) -> None:  # noqa: B027 - a no-op is the right default for a host
        """Raise :class:`BackendDown` (or :class:`BackendAuthError`) if it cannot serve now."""

    @abstractmethod
    def pools(self) -> list[PoolSpec]:
        """Describe the capacity this backend offers, one spec per pool."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Start a job; idempotent per ``job.key``. Raises a :class:`BackendError` if it
        cannot start; the job's own failure shows later in :meth:`status`."""

    def replica_socket(self, job: Job) -> Path | None:
        """The unix socket (the gateway's own) that reaches a service replica's server, once
        it exists; None for a backend that cannot reach its jobs (``Capability.SERVICES``)."""
        return None

    @abstractmethod
    def status(self, job: Job) -> JobStatus:
        """The job's current state."""

    @abstractmethod
    def cancel(self, job: Job) -> None:
        """Stop a job and everything it started. Idempotent."""

    @abstractmethod
    def read_log(self, job: Job, index: int, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of an executor's ``stdout`` or ``stderr`` from ``offset``."""

    @abstractmethod
    def recover(self) -> list[Job]:
        """Jobs started before a gateway restart that have not been fully reported."""

    @abstractmethod
    def forget(self, job: Job) -> None:
        """Release what the job left behind once the node has its final report."""
