"""Apply the scheduler core's decisions to the store: variants, preemption, event text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from computenet.model.task import TaskSpec, TaskState
from computenet.sched.types import Decision
from computenet.store import tables as t
from computenet.tasks.lifecycle import Event, Phase
from computenet.tasks.transitions import current_phase, move

LeaseLost = Callable[[Session, t.Task, datetime, str], None]


def spec_update(spec: TaskSpec, variant: int) -> dict[str, Any]:
    """Column values that make the stored task the chosen variant (nothing for ``-1``)."""
    if variant < 0:
        return {}
    chosen = spec.with_variant(variant)
    need = chosen.resources.need()
    return {
        "spec": chosen.model_dump(mode="json", exclude_none=True),
        "cpu_cores": need.cpu_cores,
        "memory_mib": need.memory_mib,
        "accelerators": need.accelerators,
    }


def placed_message(d: Decision, spec: TaskSpec) -> str:
    """The placement event: pool, variant, and the estimates that won it."""
    text = f"placed on {d.pool}"
    if d.reservation:
        text += f" on reservation {d.reservation}"
    if d.variant >= 0:
        text += f" as variant {d.variant} ({spec.variants[d.variant].name or 'unnamed'})"
    e = d.estimate
    if e is not None:
        text += (
            f" (score {e.score:.3f}; est. start {e.start_s:.0f} s, run {e.run_s:.0f} s,"
            f" cost {e.cost:.2f}, {e.carbon_g:.0f} gCO2)"
        )
    if d.preempt:
        text += f"; preempted {', '.join(d.preempt)}"
    return text


def preempt(s: Session, victim: str, by: str, now: datetime, lease_lost: LeaseLost) -> None:
    """Send preemptible work back to the queue to make room for ``by``.

    A leased task loses its lease (its gateway is told at the next heartbeat and stops it);
    a task placed but not yet leased is simply un-placed.
    """
    row = s.get(t.Task, victim, with_for_update=True)
    if row is None or TaskState(row.state).terminal:
        return
    why = f"preempted by {by}"
    if row.lease_id is not None:
        lease_lost(s, row, now, why)
        return
    if current_phase(s, row) is Phase.PLACED:
        move(
            s,
            row,
            Event.PREEMPTED,
            now,
            f"{why}; re-queued",
            pool_cpi=None,
            reason=f"re-queued: {why}",
        )
