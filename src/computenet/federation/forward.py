"""Task forwarding: a task placed on another node's pool runs there under the same id.

Origin (where it was submitted): a task the scheduler placed on a remote pool gets a
``fed_forwards`` row and is sent to the owning node, again each tick until that node confirms.
Owner: a forwarded task is held in ``fed_inbound`` and queued only after the origin confirms
it; the origin confirms only while it has not given up on that node. So a forward the origin
retried elsewhere after a timeout is dropped by the owner, never run twice. Once confirmed,
the owner pushes the task's state, logs and signed usage to the origin whenever it changes
(``task.update``), the origin also pulls them each tick (the safety net for a lost push), and
the origin sends cancels to the owner.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select

from computenet.billing.settlement import charges_of, interim_of
from computenet.errors import ComputeNetError, Forbidden
from computenet.federation.keys import CertBody, Identity, b64, canonical
from computenet.federation.mirror import mirror_task
from computenet.federation.peer import Peer
from computenet.federation.ports import Tasks
from computenet.model.api import View
from computenet.model.ids import origin_of
from computenet.model.task import TaskSpec, TaskState
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_federation import FedForward, FedInbound, FedPool
from computenet.tasks.clock import Clock, utcnow
from computenet.tasks.lifecycle import Event, Phase
from computenet.tasks.transitions import (
    LIVE_FORWARD,
    current_phase,
    guard,
    move,
    step_forward,
    step_inbound,
)

log = logging.getLogger("computenet.federation")
Where = tuple[str, str]  # a node: its code (the recipient named) and its URL
BATCH = 200
# A snapshot carries a running replica's newest interim records only (8 h of 300 s intervals):
# the origin has the older ones from earlier snapshots, and a message stays small. An origin
# cut off for longer misses the intervals in between; the settlement lists them.
INTERIM_PER_SNAPSHOT = 96
SIGNATURES_KEPT = 100_000


class Forwarder:
    """Both ends of forwarding for one node."""

    def __init__(
        self,
        db: Database,
        ident: Identity,
        peer: Peer,
        tasks: Tasks,
        timeout_s: float,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.clock = clock
        self.ident = ident
        self.peer = peer
        self.tasks = tasks
        self.timeout_s = timeout_s
        # Interim records are sent again with every snapshot of a running replica: their
        # signatures are kept (Ed25519 signs deterministically), not made again each time.
        self._interim_sigs: dict[bytes, str] = {}
        # Owner side: task events up to this id were pushed to the origins. None until the
        # first push round, which starts from the newest: after a restart, what changed
        # before reaches the origins through their pulls.
        self._pushed_upto: int | None = None

    # ---- origin side --------------------------------------------------------------

    def tick(self, pull: bool = True) -> None:
        """Forward newly placed tasks, resend or give up on unconfirmed ones, pass cancels
        on and (with ``pull``) pull the state of confirmed ones."""
        self._claim_new()
        with self.db.read() as s:
            active = list(
                s.execute(
                    select(FedForward, t.Task.state, t.Task.cancel_requested)
                    .join(t.Task, t.Task.id == FedForward.task_id)
                    .where(FedForward.state.in_(LIVE_FORWARD))
                    .limit(BATCH * 10)
                )
            )
        sent: dict[Where, list[FedForward]] = defaultdict(list)
        confirmed: dict[Where, list[str]] = defaultdict(list)
        cancel: dict[Where, list[str]] = defaultdict(list)
        for fwd, state, cancel_requested in active:
            to = (fwd.target, fwd.target_url)
            if fwd.state == "sent":
                sent[to].append(fwd)
            else:
                confirmed[to].append(fwd.task_id)
                if cancel_requested or state == TaskState.CANCELED.value:
                    cancel[to].append(fwd.task_id)
        for to, fwds in sent.items():
            self._send(to, fwds)
        for to, ids in cancel.items():
            self._call_quietly(to, "task.cancel", {"task_ids": ids})
        for to, ids in confirmed.items() if pull else ():
            for i in range(0, len(ids), BATCH):
                self._pull_state(to, ids[i : i + BATCH])

    def _claimable(self) -> Select[t.Task, str, str]:
        """Queued tasks placed on another node's pool and not (or no longer) forwarded."""
        return (
            select(t.Task, FedPool.owner, FedPool.url)
            .join(FedPool, FedPool.cpi == t.Task.pool_cpi)
            .where(guard(Phase.PLACED), FedPool.via != self.ident.code)
            .limit(BATCH)
        )

    @staticmethod
    def _vanished() -> Select[t.Task]:
        """Queued tasks placed on a pool that is in neither the local pools nor the index any
        more (a full resync from a child dropped it) and not handed to another node."""
        return (
            select(t.Task)
            .where(
                guard(Phase.PLACED),
                t.Task.pool_cpi.not_in(select(t.Pool.cpi)),
                t.Task.pool_cpi.not_in(select(FedPool.cpi)),
            )
            .limit(BATCH)
        )

    def _claim_new(self) -> None:
        # Look first without the write lock: on a node with nothing to forward (most ticks,
        # which every submission wakes) the lock is never taken.
        with self.db.read() as s:
            idle = s.execute(self._claimable()).first() is None
            idle = idle and s.execute(self._vanished()).first() is None
        if idle:
            return
        now = self.clock()
        with self.db.write() as s:
            for task in list(s.scalars(self._vanished())):
                why = f"re-queued: pool {task.pool_cpi} left the federation index"
                move(s, task, Event.UNPLACED, now, why, pool_cpi=None, reason=why)
            for task, owner, url in list(s.execute(self._claimable())):
                assert task.pool_cpi is not None
                # The task moves first: its guard (placed, no live forward) must see the
                # record as it was.
                move(s, task, Event.FORWARDED, now, f"forwarded to node {owner}")
                fwd = s.get(FedForward, task.id)
                if fwd is None:
                    fwd = FedForward(
                        task_id=task.id, events_seen=0, state=step_forward(None, "sent")
                    )
                    s.add(fwd)
                else:
                    step_forward(fwd, "sent")
                fwd.target, fwd.target_url, fwd.pool_cpi = owner, url, task.pool_cpi
                fwd.created_at, fwd.updated_at = now, now

    def _send(self, to: Where, fwds: list[FedForward]) -> None:
        now = self.clock()
        expired = [f for f in fwds if now - f.created_at > timedelta(seconds=self.timeout_s)]
        live = [f for f in fwds if f not in expired]
        if expired:
            self._revoke(expired)
        if not live:
            return
        with self.db.read() as s:
            ids = [f.task_id for f in live]
            specs: dict[str, dict[str, Any]] = {
                tid: spec
                for tid, spec in s.execute(select(t.Task.id, t.Task.spec).where(t.Task.id.in_(ids)))
            }
        items = []
        for f in live:
            spec = TaskSpec.model_validate(specs[f.task_id])
            pinned = spec.placement.model_copy(update={"pool": f.pool_cpi})
            items.append(
                {
                    "task_id": f.task_id,
                    "spec": spec.model_copy(update={"placement": pinned}).model_dump(
                        mode="json", exclude_defaults=True
                    ),
                }
            )
        self._call_quietly(to, "task.forward", {"tasks": items})

    def _revoke(self, fwds: list[FedForward]) -> None:
        """Give up on unconfirmed forwards: the task goes back to the scheduler."""
        now = self.clock()
        with self.db.write() as s:
            for f in fwds:
                row = s.get(FedForward, f.task_id)
                task = s.get(t.Task, f.task_id)
                if row is None or row.state != "sent" or task is None:
                    continue  # confirmed meanwhile: the owner runs it
                if current_phase(s, task) is Phase.FORWARDED:
                    why = f"node {f.target} did not confirm within {self.timeout_s:.0f} s"
                    msg = f"forward withdrawn: {why}"
                    move(
                        s,
                        task,
                        Event.FORWARD_WITHDRAWN,
                        now,
                        msg,
                        pool_cpi=None,
                        reason=f"re-queued: {why}",
                    )
                step_forward(row, "revoked")
                row.updated_at = now
                log.warning("forward of %s to %s withdrawn (unconfirmed)", f.task_id, f.target)

    def _pull_state(self, to: Where, ids: list[str]) -> None:
        try:
            sender, reply = self.peer.call(to[1], "task.status", {"task_ids": ids}, to=to[0])
        except ComputeNetError as exc:
            log.debug("status from %s failed: %s", to[1], exc.message)
            return
        for snap in reply.get("tasks", []):
            if snap.get("id") in ids:
                mirror_task(self.db, sender, snap)

    def _call_quietly(self, to: Where, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.peer.call(to[1], kind, body, to=to[0])[1]
        except ComputeNetError as exc:
            log.debug("%s to %s failed: %s", kind, to[1], exc.message)
            return None

    def handle_confirm(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """The owner asks whether to run forwarded tasks: yes unless we gave up on it."""
        go, drop = [], []
        now = self.clock()
        with self.db.write() as s:
            for tid in list(body.get("task_ids", []))[:BATCH]:
                fwd = s.get(FedForward, tid)
                task = s.get(t.Task, tid)
                ok = (
                    fwd is not None
                    and task is not None
                    and fwd.target == sender.code
                    and fwd.state in ("sent", "confirmed")
                    and not task.cancel_requested
                    and not TaskState(task.state).terminal
                )
                if ok and fwd is not None:
                    step_forward(fwd, "confirmed")
                    fwd.updated_at = now
                    go.append(tid)
                else:
                    drop.append(tid)
        return {"go": go, "drop": drop}

    # ---- owner side ---------------------------------------------------------------

    def handle_forward(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Hold forwarded tasks until their origin confirms them."""
        items = list(body.get("tasks", []))[:BATCH]
        now = self.clock()
        accepted = []
        for item in items:
            tid = str(item.get("task_id", ""))
            if origin_of(tid) != sender.code:
                raise Forbidden(f"node {sender.code} may not forward task {tid}: not its id")
            TaskSpec.model_validate(item.get("spec"))
        with self.db.write() as s:
            for item in items:
                tid = str(item["task_id"])
                row = s.get(FedInbound, tid)
                if row is None:
                    s.add(
                        FedInbound(
                            task_id=tid,
                            origin=sender.code,
                            origin_url=sender.url,
                            spec=item["spec"],
                            state=step_inbound(None, "pending"),
                            created_at=now,
                        )
                    )
                elif row.state == "dropped":
                    step_inbound(row, "pending")
                    row.spec = item["spec"]
                accepted.append(tid)
        return {"accepted": accepted}

    def confirm_inbound(self) -> int:
        """Ask origins about held tasks; queue those confirmed, drop the rest."""
        with self.db.read() as s:
            pending = list(s.scalars(select(FedInbound).where(FedInbound.state == "pending")))
        by_origin: dict[Where, list[FedInbound]] = defaultdict(list)
        for row in pending:
            by_origin[(row.origin, row.origin_url)].append(row)
        queued = 0
        for to, rows in by_origin.items():
            reply = self._call_quietly(to, "task.confirm", {"task_ids": [r.task_id for r in rows]})
            if reply is None:
                continue
            go, drop = set(reply.get("go", [])), set(reply.get("drop", []))
            for row in rows:
                if row.task_id in go:
                    spec = TaskSpec.model_validate(row.spec)
                    # Here the origin node is the tenant: it shares and pays for its users'
                    # work as one account, and settles with them itself.
                    placement = spec.placement.model_copy(update={"tenant": None})
                    spec = spec.model_copy(update={"placement": placement})
                    owner = f"federation:{row.origin}"
                    self.tasks.submit(spec, owner, client_key=row.task_id, tid=row.task_id)
                    queued += 1
                if row.task_id in go | drop:
                    with self.db.write() as s:
                        held = s.get(FedInbound, row.task_id)
                        if held is not None and held.state == "pending":
                            step_inbound(held, "confirmed" if row.task_id in go else "dropped")
        return queued

    def _inbound_from(self, sender: CertBody, ids: list[str]) -> list[str]:
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(FedInbound.task_id).where(
                        FedInbound.task_id.in_(ids[:BATCH]),
                        FedInbound.origin == sender.code,
                        FedInbound.state == "confirmed",
                    )
                )
            )

    def handle_status(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """State, timeline, logs and signed usage of tasks the sender forwarded here."""
        return {
            "tasks": self._snapshots(self._inbound_from(sender, list(body.get("task_ids", []))))
        }

    def push_updates(self) -> int:
        """Send each origin the snapshots of its forwarded tasks that changed here since the
        last round (a new event in their timeline); return how many were sent.

        A task queued here and never handed out yet is not pushed: the origin knows it is
        queued here, and each push costs both nodes a signed call and a transaction,
        competing with the placement and lease that come next. Its events go with its next
        push, or the origin's pull. One that came back to the queue (its lease lost) is.

        A push can be missed (lost on the wire, or an event committed out of id order on
        PostgreSQL): the origin's pull each tick still brings the change, later.
        """
        with self.db.read() as s:
            newest = s.scalar(select(func.max(t.TaskEvent.id))) or 0
            upto, self._pushed_upto = self._pushed_upto, newest
            if upto is None or newest <= upto:
                return 0
            changed = s.execute(
                select(FedInbound.task_id, FedInbound.origin, FedInbound.origin_url)
                .join(t.Task, t.Task.id == FedInbound.task_id)
                .where(
                    FedInbound.state == "confirmed",
                    or_(t.Task.state != TaskState.QUEUED.value, t.Task.attempt > 0),
                    FedInbound.task_id.in_(
                        select(t.TaskEvent.task_id).where(
                            t.TaskEvent.id > upto, t.TaskEvent.id <= newest
                        )
                    ),
                )
            )
            by_origin: dict[Where, list[str]] = defaultdict(list)
            for tid, origin, url in changed:
                by_origin[(origin, url)].append(tid)
        for to, ids in by_origin.items():
            for i in range(0, len(ids), BATCH):
                self._call_quietly(
                    to, "task.update", {"tasks": self._snapshots(ids[i : i + BATCH])}
                )
        return sum(len(ids) for ids in by_origin.values())

    def handle_update(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Mirror the snapshots the owner pushed, of tasks we forwarded to it and it runs
        for us (confirmed); anything else in the message is ignored."""
        snaps = {str(snap.get("id")): snap for snap in body.get("tasks", [])}
        with self.db.read() as s:
            ours = list(
                s.scalars(
                    select(FedForward.task_id).where(
                        FedForward.task_id.in_(list(snaps)),
                        FedForward.target == sender.code,
                        FedForward.state == "confirmed",
                    )
                )
            )
        applied = []
        for tid in ours:
            try:
                mirror_task(self.db, sender, snaps[tid], self.clock())
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("malformed snapshot of %s from %s: %r", tid, sender.code, exc)
                continue
            applied.append(tid)
        return {"applied": sorted(applied)}

    def _snapshots(self, ids: list[str]) -> list[dict[str, Any]]:
        """The owner's view of forwarded tasks, with their usage signed by this node."""
        out = []
        for tid in ids:
            snap = self.tasks.get(tid, View.FULL).model_dump(mode="json", exclude_none=True)
            snap.pop("spec", None)
            charges = charges_of(self.db, tid)
            records = [
                {**u, "charge": charges[u["attempt"]]} if u["attempt"] in charges else u
                for u in snap.get("usage", [])
            ]
            # Signed with the charge this node made, so both sides settle the same amount.
            snap["signed_usage"] = [
                {"record": u, "signature": b64(self.ident.key.sign(canonical(u)))} for u in records
            ]
            # A running replica's elapsed intervals, signed the same way: the origin's bill
            # shows them while the replica runs, not only once its attempt ends.
            snap["signed_interim"] = [
                {"record": u, "signature": self._sign_interim(u)}
                for u in interim_of(self.db, tid, INTERIM_PER_SNAPSHOT)
            ]
            out.append(snap)
        return out

    def _sign_interim(self, record: dict[str, Any]) -> str:
        body = canonical(record)
        sig = self._interim_sigs.get(body)
        if sig is None:
            if len(self._interim_sigs) >= SIGNATURES_KEPT:
                self._interim_sigs.clear()
            sig = self._interim_sigs[body] = b64(self.ident.key.sign(body))
        return sig

    def handle_cancel(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Cancel tasks the sender forwarded here."""
        states = {}
        for tid in self._inbound_from(sender, list(body.get("task_ids", []))):
            try:
                states[tid] = self.tasks.cancel(tid).value
            except ComputeNetError as exc:
                states[tid] = exc.reason
        return {"states": states}
