"""Mirror a forwarded task's state, timeline, logs and usage at the node it was submitted to."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from computenet.billing.ledger import period_of
from computenet.billing.settlement import book_remote, consistent
from computenet.errors import ComputeNetError
from computenet.federation.keys import CertBody, canonical, verify
from computenet.model.task import TaskState
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import InterimUsage
from computenet.store.tables_federation import FedForward, FedUsage
from computenet.tasks.clock import utcnow
from computenet.tasks.lifecycle import IllegalTransition, is_terminal, mirrored
from computenet.tasks.transitions import current_phase, log_line, move, step_forward

log = logging.getLogger("computenet.federation")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def mirror_task(
    db: Database, owner: CertBody, snap: dict[str, Any], now: datetime | None = None
) -> None:
    """Apply the owner's snapshot of a task to our copy; usage only if its signature holds.

    The state moves through the lifecycle: a task that ended here (canceled before the owner
    confirmed, say) keeps its own final state whatever the owner reports.
    """
    tid = str(snap["id"])
    now = now or utcnow()
    with db.write() as s:
        task = s.get(t.Task, tid, with_for_update=True)
        fwd = s.get(FedForward, tid)
        if task is None or fwd is None or fwd.target != owner.code:
            return
        state = TaskState(snap["state"])
        phase = current_phase(s, task)
        if not is_terminal(phase) and state not in (TaskState.UNKNOWN, TaskState.PAUSED):
            # Refused events are logged by the lifecycle; the rest of the snapshot still
            # applies. The timeline rows come from the owner's events, copied below.
            with contextlib.suppress(IllegalTransition):
                move(s, task, mirrored(state), now, None)
        task.attempt = int(snap.get("attempt") or task.attempt)
        task.reason = str(snap.get("reason") or "")
        task.started_at = _time(snap.get("started_at")) or task.started_at
        task.ended_at = _time(snap.get("ended_at")) or task.ended_at
        task.updated_at = now
        events = list(snap.get("events", []))
        for ev in events[fwd.events_seen :]:
            at = _time(ev["at"]) or now
            log_line(s, tid, int(ev["attempt"]), ev["state"], f"[{owner.code}] {ev['message']}", at)
        fwd.events_seen = max(fwd.events_seen, len(events))
        for att in snap.get("attempts", []):
            for ex in att.get("executors", []):
                key = (tid, int(att["attempt"]), int(ex["index"]))
                log = s.get(t.ExecutorLog, key)
                if log is None:
                    log = t.ExecutorLog(task_id=tid, attempt=key[1], index=key[2])
                    s.add(log)
                log.stdout = ex.get("stdout") or ""
                log.stderr = ex.get("stderr") or ""
                log.stdout_chars, log.stderr_chars = len(log.stdout), len(log.stderr)
                log.exit_code = ex.get("exit_code")
                log.start_time = _time(ex.get("start_time"))
                log.end_time = _time(ex.get("end_time"))
        # Intervals first: the closing charge that follows them is net of what they billed.
        for signed in snap.get("signed_interim", []):
            _record_interim(s, owner, task, signed, now)
        for signed in snap.get("signed_usage", []):
            _record_usage(s, owner, tid, signed, now)
        if state.terminal and fwd.state == "confirmed":
            step_forward(fwd, "done")
            fwd.updated_at = now


def _record_interim(
    s: Any, owner: CertBody, task: t.Task, signed: dict[str, Any], now: datetime
) -> None:
    """One interval of a forwarded replica, signed by the node that runs it: recorded for
    our tenant, and its charge booked as that node made it (each interval once)."""
    rec, sig = signed.get("record"), str(signed.get("signature", ""))
    if not isinstance(rec, dict) or rec.get("task_id") != task.id:
        return
    try:
        verify(owner.public_key, sig, canonical(rec))
    except ComputeNetError:
        return  # unsigned usage is never billed
    attempt, index = int(rec["attempt"]), int(rec["interval_index"])
    have = s.scalar(
        select(InterimUsage.id).where(
            InterimUsage.task_id == task.id,
            InterimUsage.attempt == attempt,
            InterimUsage.interval_index == index,
        )
    )
    if have is not None:
        return
    charge = rec.get("charge")
    if charge is not None and (index < 0 or not consistent(charge)):
        log.warning(
            "refused interim usage of %s from %s: its charge does not add up", task.id, owner.code
        )
        return
    pflops = rec.get("pflops_hours_fp16")
    usage = InterimUsage(
        task_id=task.id,
        attempt=attempt,
        interval_index=index,
        service=str(rec["service"])[:40],
        tenant=task.tenant or task.owner,
        pool_cpi=str(rec["pool"]),
        accelerator_model=str(rec["accelerator_model"])[:64]
        if rec.get("accelerator_model")
        else None,
        cards=int(rec["cards"]),
        wall_s=Decimal(str(rec["wall_s"])),
        card_hours=Decimal(str(rec["card_hours"])),
        cpu_core_hours=Decimal(str(rec["cpu_core_hours"])),
        pflops_hours_fp16=Decimal(str(pflops)) if pflops is not None else None,
        requests=max(0, int(rec.get("requests", 0))),
        period=period_of(now),
        created_at=now,
    )
    s.add(usage)
    if charge is not None:
        book_remote(s, task, usage, charge, now, index)


def _record_usage(s: Any, owner: CertBody, tid: str, signed: dict[str, Any], now: datetime) -> None:
    rec, sig = signed.get("record"), str(signed.get("signature", ""))
    if not isinstance(rec, dict):
        return
    try:
        verify(owner.public_key, sig, canonical(rec))
    except ComputeNetError:
        return  # unsigned usage is never billed
    attempt = int(rec["attempt"])
    if s.get(FedUsage, (tid, attempt)) is not None:
        return
    charge = rec.get("charge")
    if charge is not None and not consistent(charge):
        log.warning("refused usage of %s from %s: its charge does not add up", tid, owner.code)
        return
    s.add(
        FedUsage(
            task_id=tid,
            attempt=attempt,
            signer=owner.code,
            record=rec,
            signature=sig,
            received_at=now,
        )
    )

    def amount(key: str) -> Decimal:
        return Decimal(str(rec[key]))

    usage = t.UsageRecord(
        task_id=tid,
        attempt=attempt,
        pool_cpi=str(rec["pool"]),
        accelerator_model=str(rec["accelerator_model"])[:64]
        if rec.get("accelerator_model")
        else None,
        cards=int(rec["cards"]),
        wall_s=amount("wall_s"),
        card_hours=amount("card_hours"),
        cpu_core_hours=amount("cpu_core_hours"),
        memory_gib_hours=amount("memory_gib_hours"),
        pflops_hours_fp16=(
            Decimal(str(rec["pflops_hours_fp16"])) if rec.get("pflops_hours_fp16") else None
        ),
        created_at=now,
    )
    s.add(usage)
    task = s.get(t.Task, tid)
    if charge is not None and task is not None:
        book_remote(s, task, usage, charge, now)
