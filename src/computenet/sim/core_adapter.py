"""The one place the simulator meets the live scheduling core (``computenet.sched``).

Jobs and pools are translated to the core's own inputs (TaskView, PoolView) and the
core's decisions are translated back. Nothing here ranks or filters pools: every choice is
the core's, so the simulator measures exactly what a live node would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from computenet.errors import InvalidInput
from computenet.model.pool import (
    Accelerator,
    Capacity,
    PoolHealth,
    PoolSpec,
    Region,
)
from computenet.model.task import (
    AcceleratorRequest,
    Executor,
    Placement,
    Policy,
    Resources,
    TaskSpec,
)
from computenet.sched.core import PoolView, TaskView, schedule
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job

# The simulator tracks cards only; CPU and memory are sized so they never bind.
_CORES_PER_CARD = 16
_MEMORY_MIB_PER_CARD = 128 * 1024

CORE_POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)


def pool_spec(pool: SimPool) -> PoolSpec:
    """The PoolSpec a gateway would declare for ``pool``."""
    label = pool.pool_id.rsplit("/", 1)[-1]
    return PoolSpec(
        label=label,
        backend="sim",
        cpu_cores=_CORES_PER_CARD * pool.cards_per_machine,
        memory_mib=_MEMORY_MIB_PER_CARD * pool.cards_per_machine,
        machines=pool.machines,
        accelerator=Accelerator(
            vendor=pool.vendor,
            model=pool.accelerator,
            memory_mib=pool.memory_gib * 1024,
            count=pool.cards_per_machine,
        ),
        region=Region(code=pool.region, name=pool.site, lat=pool.lat, lon=pool.lon),
        price_per_card_hour=pool.price_per_card_hour,
    )


def task_spec(job: Job, policy: Policy, pools: Sequence[SimPool]) -> TaskSpec:
    """The TaskSpec a consumer would submit for ``job`` under ``policy``.

    A job that runs on only one of the topology's models pins that model; otherwise it
    asks for any card with the memory it needs, and the core chooses. A job whose usable
    models the core's constraints cannot express is refused.
    """
    usable = sorted({p.accelerator for p in pools if p.accelerator in job.runtime_s})
    if not usable:
        raise InvalidInput(f"job {job.job_id} runs on no accelerator model in the topology")
    model = usable[0] if len(usable) == 1 else None
    if model is None:
        admitted = {p.accelerator for p in pools if p.memory_gib >= job.min_memory_gib}
        if not admitted <= set(usable):
            raise InvalidInput(
                f"job {job.job_id}: runs on {', '.join(usable)}, which neither one model "
                "nor a minimum card memory describes"
            )
    return TaskSpec(
        name=job.job_id,
        executors=[Executor(command=["sim"])],
        resources=Resources(
            cpu_cores=1,
            ram_gb=1.0,
            accelerator=AcceleratorRequest(
                model=model, count=job.cards, min_memory_gib=job.min_memory_gib or None
            ),
            time_limit_s=None,
        ),
        placement=Placement(policy=policy, priority=job.priority),
    )


class CorePlacer:
    """Runs ``computenet.sched.core.schedule`` under one of its policies."""

    def __init__(self, policy: str, topology: Topology, jobs: Sequence[Job]) -> None:
        self.name = policy
        self._policy = Policy(policy)
        self._pools = {p.pool_id: p for p in topology.pools}
        self._specs = {p.pool_id: pool_spec(p) for p in topology.pools}
        self._tasks = {
            j.job_id: TaskView(
                j.job_id, task_spec(j, self._policy, topology.pools), j.priority, seq
            )
            for seq, j in enumerate(jobs)
        }

    def place(
        self, now_s: float, pending: Sequence[Job], free: Mapping[str, int]
    ) -> list[tuple[Job, SimPool]]:
        """One scheduling round of the core over ``pending``."""
        views = [
            PoolView(
                cpi,
                spec,
                PoolHealth.HEALTHY,
                Capacity(
                    cpu_cores=_CORES_PER_CARD * free[cpi],
                    memory_mib=_MEMORY_MIB_PER_CARD * free[cpi],
                    accelerators=free[cpi],
                ),
            )
            for cpi, spec in self._specs.items()
        ]
        by_id = {j.job_id: j for j in pending}
        decisions = schedule([self._tasks[j.job_id] for j in pending], views)
        return [(by_id[d.task_id], self._pools[d.pool]) for d in decisions if d.pool is not None]
