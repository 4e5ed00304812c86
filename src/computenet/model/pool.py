"""Pool descriptions: a homogeneous set of capacity behind one backend queue.

Everything here is pure data, validated at the boundary. Live capacity and price are
attributes of the record, never part of the identifier.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from computenet.model.cpi import validate_label
from computenet.model.egress import MAX_RULES, parse_rules

REGION_CODE = re.compile(r"[0-9]{2}(?:[0-9]{2}(?:[0-9]{2})?)?")


def check_region(code: str) -> str:
    """``code`` if it is a GB/T 2260 code of 2, 4 or 6 digits, else ``ValueError`` saying so."""
    if not REGION_CODE.fullmatch(code):
        raise ValueError(f"region {code!r} must be a GB/T 2260 code of 2, 4 or 6 digits")
    return code


Money = Annotated[Decimal, Field(ge=0, le=Decimal("1000000"), max_digits=18, decimal_places=6)]


class Strict(BaseModel):
    """Base for every wire model: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class Capability(StrEnum):
    """Things a backend may or may not be able to do with a task. A pool declares the ones
    its backend cannot do (:attr:`PoolSpec.unsupported`); the scheduler keeps tasks that
    need one (:meth:`computenet.model.task.TaskSpec.needs`) off it."""

    GPUS = "gpus"  # give a job exclusive accelerators
    STAGING = "staging"  # put inputs (fetched or inline) in place, upload outputs
    TIME_LIMIT = "time_limit"  # enforce resources.time_limit_s
    CANCEL = "cancel"  # stop a running job and everything it started
    WORKDIR = "workdir"  # run an executor in its workdir
    STDIN = "stdin"  # feed an executor's stdin from a file
    ENV = "env"  # set an executor's environment
    MULTIPLE_EXECUTORS = "multiple_executors"  # run several executors in order
    RECOVER = "recover"  # find its jobs again after a gateway restart
    FULL_LOGS = "full_logs"  # read back an executor's whole output, however large
    SERVICES = "services"  # runs service replicas (the gateway reaches them through a socket)


Reason = Annotated[str, Field(max_length=512)]


class Architecture(StrEnum):
    """CPU instruction set architecture of the machines in a pool."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    RISCV64 = "riscv64"
    OTHER = "other"


class Accelerator(Strict):
    """The accelerator fitted to each machine of a pool."""

    vendor: str = Field(min_length=1, max_length=64, description="nvidia, huawei, cambricon, ...")
    model: str = Field(min_length=1, max_length=64, description="catalog id, e.g. nvidia-h100-sxm")
    memory_mib: int = Field(ge=0, le=16 * 1024 * 1024)
    count: int = Field(ge=1, le=1024, description="cards per machine")


class Region(Strict):
    """Where a pool is: a GB/T 2260 administrative code plus coordinates."""

    code: str = Field(description="GB/T 2260 code: 2 (province), 4 or 6 digits, e.g. '31'")
    name: str = Field(default="", max_length=128)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not REGION_CODE.fullmatch(v):
            raise ValueError("region code must be a GB/T 2260 code of 2, 4 or 6 digits")
        return v

    def within(self, prefix: str) -> bool:
        """True when this region lies in the administrative area ``prefix`` (e.g. '31')."""
        return self.code.startswith(prefix)


class Software(Strict):
    """What a pool's machines run."""

    os: str = Field(default="", max_length=128)
    driver: str = Field(default="", max_length=64)
    cuda: str = Field(default="", max_length=32)
    cann: str = Field(default="", max_length=32)
    container_runtimes: list[str] = Field(default_factory=list, max_length=16)


class Capacity(Strict):
    """An amount of capacity: what a pool has in total, or free, or what a task takes."""

    cpu_cores: int = Field(default=0, ge=0, le=10_000_000)
    memory_mib: int = Field(default=0, ge=0, le=10**12)
    accelerators: int = Field(default=0, ge=0, le=10_000_000)

    def fits(self, need: Capacity) -> bool:
        """True when ``need`` fits inside this amount."""
        return (
            need.cpu_cores <= self.cpu_cores
            and need.memory_mib <= self.memory_mib
            and need.accelerators <= self.accelerators
        )

    def minus(self, other: Capacity) -> Capacity:
        """This amount less ``other``, floored at zero."""
        return Capacity(
            cpu_cores=max(0, self.cpu_cores - other.cpu_cores),
            memory_mib=max(0, self.memory_mib - other.memory_mib),
            accelerators=max(0, self.accelerators - other.accelerators),
        )

    def plus(self, other: Capacity) -> Capacity:
        """The sum of two amounts."""
        return Capacity(
            cpu_cores=self.cpu_cores + other.cpu_cores,
            memory_mib=self.memory_mib + other.memory_mib,
            accelerators=self.accelerators + other.accelerators,
        )


Tflops = Annotated[Decimal, Field(gt=0, le=Decimal("100000"), max_digits=18, decimal_places=9)]


class MeasuredThroughput(Strict):
    """Dense matmul throughput a gateway measured: per card on a pool with an accelerator,
    else per machine. Normalized usage prefers it to the catalog's figure."""

    fp16_tflops: Tflops | None = None
    fp32_tflops: Tflops | None = None
    fp64_tflops: Tflops | None = None
    device: str = Field(default="", max_length=128)
    method: str = Field(default="", max_length=512)
    measured_at: datetime


class PoolSpec(Strict):
    """What a gateway declares about one pool."""

    label: str = Field(description="pool label, the last part of the CPI")
    backend: str = Field(default="local", max_length=32)
    architecture: Architecture = Architecture.X86_64
    cpu_model: str = Field(default="", max_length=128)
    cpu_cores: int = Field(ge=1, le=100_000, description="cores per machine")
    memory_mib: int = Field(ge=1, le=10**9, description="memory per machine")
    machines: int = Field(default=1, ge=1, le=100_000)
    accelerator: Accelerator | None = None
    software: Software = Field(default_factory=Software)
    region: Region = Field(default_factory=lambda: Region(code="11"))
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    price_per_card_hour: Money = Decimal("0")
    price_per_core_hour: Money = Decimal("0")
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    measured: MeasuredThroughput | None = None
    # What the pool's backend cannot do, each with the reason (the gateway fills it in).
    unsupported: dict[Capability, Reason] = Field(default_factory=dict, max_length=16)
    egress: list[str] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="HOST:PORT endpoints its sandboxed tasks may reach (model/egress.py); "
        "empty: no network at all",
    )

    @model_validator(mode="after")
    def _measured(self) -> PoolSpec:
        if self.measured and self.measured.fp16_tflops is not None and self.accelerator is None:
            raise ValueError("a measured FP16 figure belongs to a pool with an accelerator")
        return self

    @field_validator("egress")
    @classmethod
    def _egress(cls, v: list[str]) -> list[str]:
        try:
            return [str(rule) for rule in parse_rules(v)]
        except Exception as exc:
            raise ValueError(str(exc)) from None

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        try:
            return validate_label(v, "pool label")
        except Exception as exc:
            raise ValueError(str(exc)) from None

    def total(self) -> Capacity:
        """The pool's whole capacity across its machines."""
        cards = self.accelerator.count * self.machines if self.accelerator else 0
        return Capacity(
            cpu_cores=self.cpu_cores * self.machines,
            memory_mib=self.memory_mib * self.machines,
            accelerators=cards,
        )


class PoolHealth(StrEnum):
    """Whether the node believes a pool can take work now."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
