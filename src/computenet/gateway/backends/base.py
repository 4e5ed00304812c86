"""The adapter contract every backend implements (local host now; Slurm, Ray, TES later).

The gateway agent speaks only this contract, so every backend behaves the same to the node.
Methods are synchronous and quick; the agent calls them from worker threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec, TaskState


@dataclass(frozen=True)
class Job:
    """A leased task attempt as the backend sees it."""

    task_id: str
    attempt: int
    lease_id: str
    pool_cpi: str
    spec: TaskSpec

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


class Backend(ABC):
    """One provider backend behind a gateway."""

    name: str = "abstract"

    @abstractmethod
    def pools(self) -> list[PoolSpec]:
        """Describe the capacity this backend offers, one spec per pool."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Start a job. Raises on failure to start; the job's own failure shows in status."""

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
