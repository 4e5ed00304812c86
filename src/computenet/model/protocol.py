"""Messages of the gateway protocol, ``/gateway/v1``. Shared by node and gateway.

Gateways connect outbound (providers sit behind firewalls): they enrol, declare pools,
heartbeat (which renews their leases), long-poll for leases and report task progress.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from computenet.errors import InvalidInput
from computenet.model.pool import PoolSpec, Strict
from computenet.model.task import TaskSpec, TaskState

PROTOCOL_VERSION = 1
REPORTABLE_STATES = frozenset(
    {
        TaskState.INITIALIZING,
        TaskState.RUNNING,
        TaskState.COMPLETE,
        TaskState.EXECUTOR_ERROR,
        TaskState.SYSTEM_ERROR,
        TaskState.CANCELED,
    }
)


class EnrolRequest(Strict):
    """A gateway's first call: trade a one-time enrolment token for a credential."""

    token: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=256)


class EnrolReply(BaseModel):
    """The gateway's identity and credential, to keep for later runs."""

    gateway_id: str
    provider_prefix: str
    credential: str
    node_code: str
    protocol: int = PROTOCOL_VERSION


def check_protocol(version: int, who: str) -> None:
    """Refuse a peer that speaks another version of this protocol, naming both."""
    if version != PROTOCOL_VERSION:
        raise InvalidInput(
            f"{who} speaks gateway protocol {version}; this side speaks {PROTOCOL_VERSION}"
        )


class DeclarePools(Strict):
    """The pools a gateway serves. Pools it no longer declares stop being heartbeated and so
    turn unhealthy; they are not deleted (their identifiers stay stable)."""

    pools: list[PoolSpec] = Field(min_length=1, max_length=256)
    protocol: int = PROTOCOL_VERSION  # checked by the node on every (re)connect


class DeclareReply(BaseModel):
    """The CPIs the node allocated for the declared pools, by label."""

    cpis: dict[str, str]
    heartbeat_s: float
    lease_ttl_s: float
    protocol: int = PROTOCOL_VERSION  # checked by the gateway


class PoolLive(Strict):
    """Live state of one pool as the gateway sees it."""

    label: str = Field(max_length=64)
    healthy: bool = True
    running_tasks: int = Field(default=0, ge=0, le=10**6)
    message: str = Field(default="", max_length=1024)


class Heartbeat(Strict):
    """Periodic liveness; renews every lease listed in ``leases``."""

    pools: list[PoolLive] = Field(default_factory=list, max_length=256)
    leases: list[str] = Field(default_factory=list, max_length=10_000)
    rtt_ms: float | None = Field(default=None, ge=0, le=600_000, description="RTT to the node")


class HeartbeatReply(BaseModel):
    """Which leases were renewed, which are lost, and which tasks to cancel."""

    renewed: list[str]
    lost: list[str]
    cancel: list[str]
    lease_ttl_s: float


class LeaseRequest(Strict):
    """Ask for up to ``max_tasks`` tasks, waiting up to ``wait_s`` for one to appear."""

    max_tasks: int = Field(default=1, ge=1, le=256)
    wait_s: float = Field(default=20.0, ge=0, le=60)


class LeasedTask(BaseModel):
    """A task handed to a gateway until ``lease_expires_at`` unless renewed."""

    task_id: str
    lease_id: str
    attempt: int
    pool_cpi: str
    spec: TaskSpec
    lease_expires_at: datetime
    trace_id: str | None = None  # the id the task was submitted under, for the gateway's logs
    # Environment variable -> value of the secrets the task names; never stored by gateways.
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)


class LeaseReply(BaseModel):
    """Tasks leased to the gateway (possibly none when the wait ran out)."""

    tasks: list[LeasedTask]


class LogChunk(Strict):
    """New text of one stream; ``offset`` counts characters sent before it, so resends dedupe."""

    offset: int = Field(ge=0)
    data: str = Field(max_length=4 * 1024 * 1024)


class ExecutorReport(Strict):
    """Progress of one executor."""

    index: int = Field(ge=0, lt=64)
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = Field(default=None, ge=-(2**31), lt=2**31)
    stdout: LogChunk | None = None
    stderr: LogChunk | None = None


class UsageReport(Strict):
    """What an attempt used, measured by the gateway."""

    wall_s: Decimal = Field(ge=0, le=10**9)
    cpu_cores: int = Field(ge=0, le=10**7)
    memory_mib: int = Field(ge=0, le=10**12)
    cards: int = Field(ge=0, le=10**6)
    accelerator_model: str | None = None


class OutputFileLog(Strict):
    """One file stored for a task output, with its SHA-256 as the gateway computed it."""

    url: str = Field(max_length=4096)
    path: str = Field(max_length=4096)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TaskReport(Strict):
    """A state change, log output and, at the end, usage of a leased task."""

    lease_id: str = Field(max_length=64)
    state: TaskState
    executors: list[ExecutorReport] = Field(default_factory=list, max_length=64)
    system_log: list[str] = Field(default_factory=list, max_length=64)
    usage: UsageReport | None = None
    outputs: list[OutputFileLog] = Field(default_factory=list, max_length=100_000)


class ReleaseRequest(Strict):
    """Hand a leased task back: the backend cannot run it (no capacity, down)."""

    lease_id: str = Field(max_length=64)
    reason: str = Field(min_length=1, max_length=1024)


class ReleaseReply(BaseModel):
    """The task's state after a release: QUEUED again, or final if out of attempts."""

    state: TaskState


class ReportReply(BaseModel):
    """Acknowledgement; ``cancel`` tells the gateway to stop the task."""

    cancel: bool = False
