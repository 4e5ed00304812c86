"""The one place the simulator meets the live scheduling core (``computenet.sched``),
through the live node's pass decision (:func:`computenet.tasks.placement.plan_pass`).

Jobs and pools are translated to the core's own inputs (TaskView, PoolView, Context) and
its decisions back. Nothing here ranks or filters pools: every choice is the core's, made
from what a live node would know (a runtime hint, a workload name, where the data is), while
the engine runs each job for its true time on the card it got. Gateways lease, and pools
turn unhealthy and back, by the live dispatcher's own functions
(:mod:`computenet.tasks.dispatching`, :mod:`computenet.tasks.health`), in virtual time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from computenet.errors import InvalidInput
from computenet.model.pool import Accelerator, Capacity, PoolHealth, PoolSpec, Region
from computenet.model.task import (
    MAX_TIME_LIMIT_S,
    AcceleratorRequest,
    Executor,
    Placement,
    Policy,
    Resources,
    TaskSpec,
)
from computenet.sched.core import (
    Context,
    Dataset,
    PoolView,
    TaskView,
    TenantShare,
    shape_key,
)
from computenet.sched.estimates import REFERENCE_MODEL
from computenet.sched.pooltable import workload_throughputs
from computenet.sim.placers import Check
from computenet.sim.telemetry import Dispatch, Heartbeats, Outage
from computenet.sim.topology import SimPool, Topology
from computenet.sim.trace import Job
from computenet.tasks.dispatching import Held, Placed, expiries, lease_order
from computenet.tasks.health import went_silent
from computenet.tasks.lifecycle import Phase
from computenet.tasks.placement import Waiting, plan_pass

# The simulator tracks cards only; CPU and memory are sized so they never bind.
_CORES_PER_CARD = 16
_MEMORY_MIB_PER_CARD = 128 * 1024

CORE_POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)


def pool_spec(pool: SimPool) -> PoolSpec:
    """The PoolSpec a gateway would declare for ``pool``."""
    return PoolSpec(
        label=pool.pool_id.rsplit("/", 1)[-1],
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
        labels={"pue": str(pool.pue), "carbon_g_per_kwh": str(pool.carbon_g_per_kwh)},
    )


def task_spec(job: Job, policy: Policy, pools: Sequence[SimPool]) -> TaskSpec:
    """The TaskSpec a consumer would submit for ``job`` under ``policy``.

    It asks for ``cards`` cards of any model with the memory the job needs (or pins the one
    model it runs on), hints its run time on one model, names its workload when the core's
    throughput table knows it, and points at its input data. A job whose usable models the
    core's constraints cannot express is refused.
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
    hint_model = REFERENCE_MODEL if REFERENCE_MODEL in job.runtime_s else usable[-1]
    # Hints are whole seconds up to the longest time limit a task may ask for.
    hint_s = min(MAX_TIME_LIMIT_S, max(1, round(job.runtime_s[hint_model])))
    known = job.workload in workload_throughputs()
    return TaskSpec(
        name=job.job_id,
        executors=[Executor(command=["sim"])],
        resources=Resources(
            cpu_cores=1,
            ram_gb=1.0,
            accelerator=AcceleratorRequest(
                model=model, count=job.cards, min_memory_gib=job.min_memory_gib or None
            ),
        ),
        placement=Placement(
            policy=policy,
            priority=job.priority,
            tenant=job.tenant,
            origin_region=job.origin or None,
            datasets=[job.job_id] if job.origin and job.input_gb > 0 else [],
            runtime_hint_s=hint_s,
            hint_model=hint_model,
            workload=job.workload if known else None,
        ),
    )


@dataclass
class _Lease:
    """A job handed to its pool's gateway: the attempt, and when the lease ends."""

    pool: str
    attempt: int
    expires_s: float


class CorePlacer:
    """Runs the node's scheduling pass (the core's ``schedule``) under one of its policies,
    and its dispatcher's health and lease decisions when ``outages`` silence gateways."""

    def __init__(
        self,
        policy: str,
        topology: Topology,
        jobs: Sequence[Job],
        outages: Sequence[Outage] = (),
        dispatch: Dispatch | None = None,
    ) -> None:
        self.name = policy
        self._pools = {p.pool_id: p for p in topology.pools}
        self._jobs = {j.job_id: j for j in jobs}
        self._dispatch = dispatch or Dispatch()
        self._beats = Heartbeats(self._pools, outages, self._dispatch)
        self._placed: dict[str, str] = {}  # job -> pool: placed, not yet leased
        self._leases: dict[str, _Lease] = {}
        self._attempts: dict[str, int] = {}
        self._specs = {p.pool_id: pool_spec(p) for p in topology.pools}
        specs = [task_spec(j, Policy(policy), topology.pools) for j in jobs]
        # Shape keys once per job, as the node's placer caches them, not once per round.
        self._tasks = {
            j.job_id: TaskView(j.job_id, spec, j.priority, seq, j.tenant, shape_key(spec))
            for seq, (j, spec) in enumerate(zip(jobs, specs, strict=True))
        }
        self._tenants = sorted({j.tenant for j in jobs})
        self._datasets = {
            j.job_id: Dataset(j.job_id, round(j.input_gb * 1e9), (j.origin,))
            for j in jobs
            if j.origin and j.input_gb > 0
        }
        self._network = topology.network

    def task_view(self, job_id: str) -> TaskView:
        """The core's view of a job's task, as a user would have submitted it."""
        return self._tasks[job_id]

    def views(self, free: Mapping[str, int]) -> list[PoolView]:
        """Every pool as the core sees it: its health, and ``free`` cards (pool id ->
        cards not held by started jobs) less what jobs placed there and not yet leased hold."""
        room = dict(free)
        for job_id, pool in self._placed.items():
            room[pool] -= self._jobs[job_id].cards
        health = self._beats.health
        return [
            PoolView(
                cpi,
                spec,
                health.get(cpi, PoolHealth.HEALTHY),
                Capacity(
                    cpu_cores=_CORES_PER_CARD * room[cpi],
                    memory_mib=_MEMORY_MIB_PER_CARD * room[cpi],
                    accelerators=room[cpi],
                ),
            )
            for cpi, spec in self._specs.items()
        ]

    def context(self, held: Mapping[str, int]) -> Context:
        """The round's context: the network, the jobs' data, equal tenant weights with the
        cards each tenant ``held`` (and has placed, not yet leased) as its usage."""
        usage = dict(held)
        for job_id in self._placed:
            job = self._jobs[job_id]
            usage[job.tenant] = usage.get(job.tenant, 0) + job.cards
        return Context(
            network=self._network,
            datasets=self._datasets,
            tenants={
                t: TenantShare(weight=1.0, usage=float(usage.get(t, 0))) for t in self._tenants
            },
        )

    def place(
        self,
        now_s: float,
        pending: Sequence[Job],
        free: Mapping[str, int],
        held: Mapping[str, int],
    ) -> list[tuple[Job, SimPool]]:
        """One scheduling round of the core over ``pending`` (those not already placed);
        returns the jobs the pools' gateways lease now (they start)."""
        # The live node's pass decision, the same function (no store, virtual time).
        waiting = [Waiting(self._tasks[j.job_id]) for j in pending if j.job_id not in self._placed]
        plan = plan_pass(waiting, self.views(free), self.context(held))
        for d in plan.placements:
            self._placed[d.task_id] = str(d.pool)
        return self._hand_out(now_s)

    def _hand_out(self, now_s: float) -> list[tuple[Job, SimPool]]:
        """Each gateway that is heartbeating leases at once all that was placed on its pools,
        in the live dispatcher's order; a silent one leases nothing."""
        if not self._placed:
            return []
        up = {p for p in set(self._placed.values()) if self._beats.up(p, now_s)}
        records = [
            Placed(i, Phase.PLACED, pool, self._jobs[i].priority, self._tasks[i].seq)
            for i, pool in self._placed.items()
        ]
        out = []
        for job_id in lease_order(records, up, len(records)):
            pool = self._placed.pop(job_id)
            attempt = self._attempts[job_id] = self._attempts.get(job_id, 0) + 1
            self._leases[job_id] = _Lease(pool, attempt, now_s + self._dispatch.lease_ttl_s)
            out.append((self._jobs[job_id], self._pools[pool]))
        return out

    # ---- gateways' heartbeats, in virtual time -------------------------------------

    def placed(self) -> dict[str, str]:
        """Jobs placed and not yet leased (their gateway is silent) -> their pool."""
        return dict(self._placed)

    def checks_s(self) -> list[float]:
        """The virtual times at which :meth:`check` may change something."""
        return self._beats.checks_s()

    def silent_until(self, pool: str, now_s: float) -> float | None:
        """When ``pool``'s gateway, silent at ``now_s``, is heard again; None if it is not."""
        return self._beats.silent_until(pool, now_s)

    def ended(self, job_id: str) -> None:
        """A job's gateway reported it finished: its lease is over."""
        self._leases.pop(job_id, None)

    def check(self, now_s: float) -> Check:
        """The node's housekeeping at ``now_s``, decided by its own functions: heartbeats
        renew leases and make pools healthy, leases that ran out end (:func:`expiries`),
        silent pools turn unhealthy and give their placed jobs back (:func:`went_silent`);
        then a gateway that came back leases what was placed on it."""
        ttl_s = self._dispatch.lease_ttl_s
        self._beats.beat(now_s)
        for lease in self._leases.values():
            lease.expires_s = max(lease.expires_s, self._beats.last_s[lease.pool] + ttl_s)
        held = (Held(i, Phase.LEASED, x.attempt, x.expires_s) for i, x in self._leases.items())
        requeued: list[str] = []
        failed: list[str] = []
        for gone in expiries(held, now_s, self._dispatch.max_attempts):
            del self._leases[gone.task_id]
            (requeued if gone.phase is Phase.WAITING else failed).append(gone.task_id)
        placed = (
            Placed(i, Phase.PLACED, pool, self._jobs[i].priority, self._tasks[i].seq)
            for i, pool in self._placed.items()
        )
        silence = went_silent(
            self._beats.beats(), placed, now_s, self._dispatch.heartbeat_timeout_s
        )
        for pool in silence.unhealthy:
            self._beats.health[pool] = PoolHealth.UNHEALTHY
        for job_id in silence.unplaced:
            del self._placed[job_id]
        return Check(self._hand_out(now_s), requeued, failed, silence.unhealthy, silence.unplaced)

    def lease(
        self, placed: Sequence[tuple[Job, SimPool]], pools: Collection[str], max_tasks: int
    ) -> list[tuple[Job, SimPool]]:
        """What a gateway owning ``pools`` is handed from ``placed`` jobs, in order, decided
        by the live dispatcher's function (:func:`computenet.tasks.dispatching.lease_order`)."""
        by_id = {job.job_id: (job, pool) for job, pool in placed}
        records = (
            Placed(j.job_id, Phase.PLACED, p.pool_id, j.priority, self._tasks[j.job_id].seq)
            for j, p in placed
        )
        return [by_id[i] for i in lease_order(records, pools, max_tasks)]
