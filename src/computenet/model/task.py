"""Task specifications: a superset of a GA4GH TES 1.1 task, plus ComputeNet's extensions.

The TES fields keep their TES names (``ram_gb``, ``disk_gb``) so TES clients map one to one;
our extensions (accelerator, time limit, placement) sit beside them.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from computenet.model.pool import Capability, Capacity, Money, Strict, check_region
from computenet.model.service_binding import ServiceBinding

MAX_EXECUTORS = 64
MAX_TIME_LIMIT_S = 30 * 24 * 3600
_BYTES_PER_GB = 10**9  # TES sizes are in GB (10^9 bytes); decimal maths keeps whole MiB exact
_MIB = 2**20
VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){0,3}")


class TaskState(StrEnum):
    """The GA4GH TES task states."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"

    @property
    def terminal(self) -> bool:
        """True for states a task never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        TaskState.COMPLETE,
        TaskState.EXECUTOR_ERROR,
        TaskState.SYSTEM_ERROR,
        TaskState.CANCELED,
        TaskState.PREEMPTED,
    }
)


class FileType(StrEnum):
    """Whether an input or output is a file or a directory."""

    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class Policy(StrEnum):
    """How the scheduler ranks the pools that satisfy a task's hard constraints."""

    BALANCED = "balanced"
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    GREENEST = "greenest"
    NEAREST = "nearest"


def check_task_path(path: str) -> str:
    """A path inside the task's own file system: no NUL and no '..' that could climb out."""
    if not path or "\x00" in path:
        raise ValueError("a path must be non-empty and must not contain NUL")
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"path {path!r} must not contain '..'")
    return path


class Executor(Strict):
    """One command run in order inside the task (a TES executor)."""

    image: str = Field(default="", max_length=512, description="container image; '' = host")
    command: list[str] = Field(min_length=1, max_length=4096)
    workdir: str | None = Field(default=None, max_length=4096)
    stdin: str | None = Field(default=None, max_length=4096)
    stdout: str | None = Field(default=None, max_length=4096)
    stderr: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=1024)
    ignore_error: bool = False

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else check_task_path(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or "=" in key or "\x00" in key or "\x00" in value:
                raise ValueError(
                    f"environment variable {key!r}: names must be non-empty "
                    "without '=', and neither name nor value may contain NUL"
                )
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v[0]:
            raise ValueError("the first word of a command (the program) must not be empty")
        if any("\x00" in part for part in v):
            raise ValueError("command words must not contain NUL bytes")
        return v


INPUT_SCHEMES = ("file", "http", "https", "s3")
OUTPUT_SCHEMES = ("file", "s3")


def check_url(url: str, schemes: tuple[str, ...]) -> str:
    """A staging URL: ``scheme://...`` with a scheme the gateways stage, or an absolute path."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme and not url.startswith("/"):
        raise ValueError(f"url {url!r} must be scheme://... or an absolute path")
    if scheme and scheme not in schemes:
        raise ValueError(f"url scheme {scheme!r} is not supported; use one of {list(schemes)}")
    # TES allows a bare path for a file: name it as the file URL it is, for the URL policy.
    return url if scheme else "file://" + url


class _Staged(Strict):
    """What inputs and outputs share: a name, a path in the task, a file or a directory."""

    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    path: str = Field(min_length=1, max_length=4096)
    type: FileType = FileType.FILE

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_task_path(v)


class Input(_Staged):
    """A file or directory the task needs (a TES input)."""

    url: str | None = Field(default=None, max_length=4096)
    content: str | None = Field(default=None, max_length=128 * 1024)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, INPUT_SCHEMES)

    streamable: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _content_wins(cls, data: Any) -> Any:
        """TES: "If content is not empty, url must be ignored" (and an empty content with a
        url is no content)."""
        if isinstance(data, dict) and data.get("url") is not None and "content" in data:
            data = dict(data)
            data.pop("url" if data["content"] else "content")
        return data

    @model_validator(mode="after")
    def _source(self) -> Input:
        if (self.url is None) == (self.content is None):
            raise ValueError("an input needs exactly one of 'url' or 'content'")
        return self


class Output(_Staged):
    """A file or directory the task produces (a TES output)."""

    url: str = Field(min_length=1, max_length=4096)
    path_prefix: str | None = Field(default=None, max_length=4096)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, OUTPUT_SCHEMES)


class AcceleratorRequest(Strict):
    """The accelerators a task needs, all in one pool."""

    vendor: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    count: int = Field(default=1, ge=1, le=1024)
    min_memory_gib: int | None = Field(default=None, ge=1, le=16384)


class SoftwareRequest(Strict):
    """Minimum software versions and a container runtime the task needs on the pool."""

    driver: str | None = Field(default=None, max_length=32, description="minimum, e.g. '535.104'")
    cuda: str | None = Field(default=None, max_length=32, description="minimum, e.g. '12.2'")
    cann: str | None = Field(default=None, max_length=32, description="minimum, e.g. '8.0'")
    container_runtime: str | None = Field(default=None, max_length=32)

    @field_validator("driver", "cuda", "cann")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not VERSION.fullmatch(v):
            raise ValueError(f"version {v!r} must be dotted numbers such as '12.2'")
        return v


class Resources(Strict):
    """TES resources plus our accelerator and time-limit extensions."""

    cpu_cores: int = Field(default=1, ge=1, le=4096)
    ram_gb: float = Field(default=1.0, gt=0, le=65536)
    disk_gb: float | None = Field(default=None, gt=0, le=10**7)
    preemptible: bool | None = None
    zones: list[str] = Field(default_factory=list, max_length=64)
    backend_parameters: dict[str, str] = Field(default_factory=dict, max_length=64)
    backend_parameters_strict: bool = False
    accelerator: AcceleratorRequest | None = None
    time_limit_s: int | None = Field(default=None, ge=1, le=MAX_TIME_LIMIT_S)
    architecture: str | None = Field(default=None, max_length=16, description="x86_64, aarch64")
    software: SoftwareRequest | None = None

    @field_validator("ram_gb", "disk_gb")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def need(self) -> Capacity:
        """What the task takes out of a pool while it runs."""
        return Capacity(
            cpu_cores=self.cpu_cores,
            memory_mib=max(1, math.ceil(Decimal(repr(self.ram_gb)) * _BYTES_PER_GB / _MIB)),
            accelerators=self.accelerator.count if self.accelerator else 0,
        )


class Placement(Strict):
    """Where a task may run and how to choose among the places it may run."""

    regions: list[str] = Field(default_factory=list, max_length=64, description="allow list")
    regions_deny: list[str] = Field(default_factory=list, max_length=64)
    policy: Policy = Policy.BALANCED
    max_price_per_card_hour: Money | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    pool: str | None = Field(default=None, max_length=256, description="pin to one CPI")
    tenant: str | None = Field(
        default=None,
        max_length=128,
        description="fair-share and paying account; must be the caller's own",
    )
    datasets: list[str] = Field(default_factory=list, max_length=64, description="by name")
    runtime_hint_s: int | None = Field(
        default=None, ge=1, le=MAX_TIME_LIMIT_S, description="run time on the hint model"
    )
    hint_model: str | None = Field(default=None, max_length=64, description="catalog model id")
    workload: str | None = Field(default=None, max_length=128, description="throughput row")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32, description="must match")
    origin_region: str | None = Field(default=None, description="where the user is (nearest)")

    @field_validator("origin_region")
    @classmethod
    def _origin(cls, v: str | None) -> str | None:
        return None if v is None else check_region(v)

    @field_validator("regions", "regions_deny")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        return [check_region(code) for code in v]


class Variant(Strict):
    """One alternative way to run the task (e.g. an Ascend build); it replaces what it sets."""

    name: str = Field(default="", max_length=64)
    accelerator: AcceleratorRequest | None = None
    architecture: str | None = Field(default=None, max_length=16)
    software: SoftwareRequest | None = None
    image: str | None = Field(default=None, max_length=512, description="for every executor")
    runtime_hint_s: int | None = Field(default=None, ge=1, le=MAX_TIME_LIMIT_S)


SECRET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class TaskSpec(Strict):
    """What a consumer submits: a TES task plus ComputeNet extensions."""

    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=16384)
    executors: list[Executor] = Field(min_length=1, max_length=MAX_EXECUTORS)
    inputs: list[Input] = Field(default_factory=list, max_length=1024)
    outputs: list[Output] = Field(default_factory=list, max_length=1024)
    volumes: list[str] = Field(default_factory=list, max_length=64)
    tags: dict[str, str] = Field(default_factory=dict, max_length=256)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    variants: list[Variant] = Field(default_factory=list, max_length=16)
    # Environment variable -> name of a secret stored on the node (``PUT /api/v1/secrets``).
    # Only names travel with the task; values are injected when the task runs, and masked
    # in its logs.
    secrets: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")],
        Annotated[str, StringConstraints(pattern=SECRET_NAME)],
    ] = Field(default_factory=dict, max_length=64)
    # Set only by a node's service controller: this task is a replica of a service. The
    # native and TES APIs refuse a user's task that sets it.
    service: ServiceBinding | None = None

    def with_variant(self, index: int) -> TaskSpec:
        """The task as variant ``index`` runs it (``-1``: the task as written, no variants)."""
        if index < 0:
            return self
        v = self.variants[index]
        res = self.resources.model_copy(
            update={
                "accelerator": v.accelerator,
                "architecture": v.architecture or self.resources.architecture,
                "software": v.software or self.resources.software,
            }
        )
        place = self.placement
        if v.runtime_hint_s is not None:
            place = place.model_copy(update={"runtime_hint_s": v.runtime_hint_s})
        execs = self.executors
        if v.image is not None:
            execs = [e.model_copy(update={"image": v.image}) for e in execs]
        return self.model_copy(
            update={"resources": res, "placement": place, "executors": execs, "variants": []}
        )

    def needs(self) -> frozenset[Capability]:
        """What a pool's backend must be able to do to run this task (as written)."""
        out = set()
        if self.resources.need().accelerators:
            out.add(Capability.GPUS)
        if self.inputs or self.outputs:
            out.add(Capability.STAGING)
        if len(self.executors) > 1:
            out.add(Capability.MULTIPLE_EXECUTORS)
        for e in self.executors:
            if e.workdir:
                out.add(Capability.WORKDIR)
            if e.stdin:
                out.add(Capability.STDIN)
            if e.env:
                out.add(Capability.ENV)
        if self.secrets:
            out.add(Capability.ENV)
        if self.service is not None:
            out.add(Capability.SERVICES)
        return frozenset(out)

    def max_price(self) -> Decimal | None:
        """The consumer's price cap per card-hour, if any."""
        return self.placement.max_price_per_card_hour
