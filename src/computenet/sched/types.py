"""The scheduler core's plain data types: its inputs (tasks, pools, a Context of live
telemetry, network and datasets) and its outputs (decisions, estimates, explanations).

They are frozen dataclasses with no behaviour beyond small helpers, so that the node, the
simulator and a monitoring component can build them from whatever they measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from computenet.model.pool import Capacity, PoolHealth, PoolSpec
from computenet.model.task import TaskSpec


@dataclass(frozen=True)
class PoolView:
    """What the scheduler knows of one pool: its description, health and free capacity."""

    cpi: str
    spec: PoolSpec
    health: PoolHealth
    free: Capacity


@dataclass(frozen=True)
class TaskView:
    """One queued task. ``tenant`` is its fair-share account ('' = the default account);
    ``shape`` is ``sched.batch.shape_key(spec)`` when the caller has it cached (else computed)."""

    task_id: str
    spec: TaskSpec
    priority: int = 0
    seq: int = 0  # submission order, for first-come-first-served among equals
    tenant: str = ""
    shape: object = None


@dataclass(frozen=True)
class PoolTelemetry:
    """Live measurements of one pool: expected queue wait when it is full, and the fraction
    of attempts that finished without a system failure (1.0 = never failed)."""

    queue_wait_s: float = 0.0
    reliability: float = 1.0


@dataclass(frozen=True)
class Link:
    """Network between two regions: round-trip time and usable bandwidth."""

    rtt_ms: float
    bandwidth_mbps: float


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its size and the regions (GB/T 2260 codes) that hold a replica."""

    name: str
    size_bytes: int
    regions: tuple[str, ...]


@dataclass(frozen=True)
class TenantShare:
    """A tenant's fair-share weight, what it holds now (in cards; CPU work counts
    ``cores / CORES_PER_CARD``) and an optional cap on what it may hold."""

    weight: float = 1.0
    usage: float = 0.0
    quota: float | None = None


@dataclass(frozen=True)
class RunningTask:
    """Work already on a pool, which on-demand work may preempt when ``preemptible``."""

    task_id: str
    pool: str
    need: Capacity
    preemptible: bool
    priority: int = 0
    tenant: str = ""


@dataclass(frozen=True)
class Reservation:
    """Cards of one pool set aside for a tenant over a window, in seconds from now (a window
    under way has ``start_in_s <= 0``). ``free_cards`` is the part the tenant's own work on
    the reservation does not hold yet."""

    reservation_id: str
    pool: str
    tenant: str
    free_cards: int
    start_in_s: float
    end_in_s: float


@dataclass(frozen=True)
class Context:
    """Everything besides tasks and pools that placement depends on.

    ``network`` maps (region, region) to a :class:`Link`; a missing pair falls back to the
    distance model in :mod:`computenet.sched.network`. Region keys are GB/T 2260 codes,
    matched on their first two digits (province).
    """

    telemetry: Mapping[str, PoolTelemetry] = field(default_factory=dict)
    network: Mapping[tuple[str, str], Link] = field(default_factory=dict)
    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    tenants: Mapping[str, TenantShare] = field(default_factory=dict)
    running: Sequence[RunningTask] = ()
    reservations: Sequence[Reservation] = ()
    egress_price_per_gb: Decimal = Decimal("0.5")
    origin_region: str = "11"


@dataclass(frozen=True)
class Estimate:
    """What placing a task (as one variant) on one pool is expected to take."""

    pool: str
    variant: int
    transfer_s: float
    wait_s: float
    run_s: float
    cost: float
    carbon_g: float
    rtt_ms: float
    reliability: float
    score: float
    speed_known: bool = True  # False: no speed figure for this card, run_s is the declared time

    @property
    def start_s(self) -> float:
        """Seconds from now until the task starts: queue wait plus moving its data."""
        return self.wait_s + self.transfer_s

    @property
    def finish_s(self) -> float:
        """Seconds from now until it is expected to finish."""
        return self.start_s + self.run_s


@dataclass(frozen=True)
class Decision:
    """The outcome for one task: a pool (with the variant chosen and any work it preempts),
    or the reason none was chosen."""

    task_id: str
    pool: str | None
    reason: str = ""
    variant: int = -1
    preempt: tuple[str, ...] = ()
    estimate: Estimate | None = None
    reservation: str = ""  # the tenant's reservation it runs on ('' = open capacity)


@dataclass(frozen=True)
class Explanation:
    """Why a task is where it is: pools each constraint excluded, and the ranked candidates."""

    task_id: str
    policy: str
    pools_total: int
    excluded: dict[str, int]
    eligible: int
    candidates: list[Estimate]
    reason: str = ""
    speed_note: str = ""  # says when run times are declared, not estimated (unknown speed)
