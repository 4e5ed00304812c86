"""One scheduling pass as pure functions: what to decide, and the guarded apply step over
in-memory state. No I/O, no clock of its own.

The live node (:class:`computenet.node.placing.Placer`) reads its store into the inputs of
:func:`plan_pass` and writes the plan back in one guarded transaction; the simulator builds
the same inputs from its model and calls :func:`plan_pass` directly, in virtual time, with
no database on its path. :func:`apply_plan` is the apply step's rule on an in-memory table:
victims first, then each placement only if its task still waits (one cancelled or placed
meanwhile stays as it is), with every change a lifecycle transition.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from computenet.sched.core import Context, Decision, PoolView, TaskView, schedule
from computenet.tasks.lifecycle import (
    HANDED_OUT_PHASES,
    Event,
    Phase,
    apply,
    lease_lost_event,
)

NO_POOLS = "no pools are registered"


@dataclass(frozen=True)
class Waiting:
    """A task waiting for a pool, and the reason it was last given for waiting."""

    view: TaskView
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    """A pass's decisions: placements (with what each preempts), and the new reason of each
    waiting task whose reason changed."""

    placements: tuple[Decision, ...]
    reasons: tuple[Decision, ...]


def plan_pass(waiting: Sequence[Waiting], pools: Sequence[PoolView], ctx: Context) -> Plan:
    """Decide one pass over ``waiting`` tasks (in priority, then submission, order)."""
    if not pools:
        told = tuple(Decision(w.view.task_id, None, NO_POOLS) for w in waiting)
        return Plan(
            (), tuple(d for d, w in zip(told, waiting, strict=True) if w.reason != NO_POOLS)
        )
    old = {w.view.task_id: w.reason for w in waiting}
    decisions = schedule([w.view for w in waiting], pools, ctx)
    return Plan(
        tuple(d for d in decisions if d.pool is not None),
        tuple(d for d in decisions if d.pool is None and d.reason != old[d.task_id]),
    )


@dataclass
class TaskRecord:
    """A task as the apply step sees it."""

    phase: Phase
    pool: str | None = None
    reason: str = ""
    reservation: str = ""
    variant: int = -1
    attempt: int = 0  # attempts handed out so far (a lease starts the next one)


def apply_plan(tasks: MutableMapping[str, TaskRecord], plan: Plan, max_attempts: int) -> list[str]:
    """Apply ``plan`` to ``tasks`` as the live node applies it to its store; return the ids
    placed. A placed victim goes back to waiting; a leased one loses its lease as the
    dispatcher's rule says (back to waiting, a system error once it has had
    ``max_attempts`` attempts, cancelled if it was being cancelled). A placement whose task
    no longer waits is skipped."""
    placed = []
    for d in plan.placements:
        for victim in d.preempt:
            rec = tasks.get(victim)
            if rec is not None and rec.phase in HANDED_OUT_PHASES | {Phase.PLACED}:
                _preempt(rec, d.task_id, max_attempts)
        rec = tasks.get(d.task_id)
        if rec is None or rec.phase is not Phase.WAITING:
            continue
        rec.phase = apply(rec.phase, Event.PLACED)
        rec.pool, rec.reservation, rec.variant, rec.reason = d.pool, d.reservation, d.variant, ""
        placed.append(d.task_id)
    for d in plan.reasons:
        rec = tasks.get(d.task_id)
        if rec is not None and rec.phase is Phase.WAITING:
            rec.reason = d.reason
    return placed


def _preempt(rec: TaskRecord, by: str, max_attempts: int) -> None:
    why = f"preempted by {by}"
    if rec.phase is Phase.PLACED:
        rec.phase = apply(rec.phase, Event.PREEMPTED)
        rec.pool, rec.reservation, rec.reason = None, "", f"re-queued: {why}"
        return
    event = lease_lost_event(rec.phase, rec.attempt, max_attempts, Event.PREEMPTED)
    rec.phase = apply(rec.phase, event)
    if rec.phase is Phase.WAITING:
        rec.reason = f"re-queued: lease on {rec.pool} {why}"
        rec.pool, rec.reservation = None, ""
