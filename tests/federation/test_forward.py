"""Forwarding bookkeeping that needs no second node: a placed pool that vanished, and
whose pushed updates an origin accepts."""

from __future__ import annotations

from pathlib import Path

from computenet.federation.forward import Forwarder
from computenet.federation.keys import root_identity
from computenet.federation.peer import Peer
from computenet.model.task import TaskSpec
from computenet.node.tasks import TaskService
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_federation import FedForward
from computenet.tasks.clock import utcnow
from computenet.tasks.lifecycle import Event
from computenet.tasks.transitions import move
from fedproc import NOW, child_of


def test_task_on_a_pool_that_left_the_index_is_requeued(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    upgrade(db)
    ident = root_identity("cn", "http://cn", NOW)
    tasks = TaskService(db, "cn")
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    tid, _ = tasks.submit(spec, "alice")
    with db.write() as s:
        row = s.get(t.Task, tid)
        assert row is not None
        row.pool_cpi = "cn.52/gone/pool"
    peer = Peer(ident)
    try:
        Forwarder(db, ident, peer, tasks, timeout_s=3).tick()
    finally:
        peer.close()
    out = tasks.get(tid)
    assert out.state.value == "QUEUED" and out.pool is None
    assert out.reason == "re-queued: pool cn.52/gone/pool left the federation index"


def _forwarded(db: Database, tasks: TaskService, fwd_state: str) -> str:
    """A task of ``cn`` forwarded to ``cn.52``, its forward record in ``fwd_state``."""
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    tid, _ = tasks.submit(spec, "alice")
    with db.write() as s:
        row = s.get(t.Task, tid)
        assert row is not None
        move(s, row, Event.PLACED, utcnow(), "placed", pool_cpi="cn.52/gz/host")
        move(s, row, Event.FORWARDED, utcnow(), "forwarded to node cn.52")
        s.add(
            FedForward(
                task_id=tid,
                target="cn.52",
                target_url="http://gz",
                pool_cpi="cn.52/gz/host",
                state=fwd_state,
                events_seen=0,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    return tid


def test_an_owner_pushed_update_applies_only_to_tasks_it_runs_for_us(tmp_path: Path) -> None:
    """``task.update``: the origin mirrors a pushed snapshot of a task it forwarded to the
    sender and the sender confirmed; one the sender does not run for it is ignored."""
    db = Database(sqlite_url(tmp_path))
    upgrade(db)
    ident = root_identity("cn", "http://cn", NOW)
    gz, other = child_of(ident, "cn.52").chain[-1].body, child_of(ident, "cn.44").chain[-1].body
    tasks = TaskService(db, "cn")
    running = _forwarded(db, tasks, "confirmed")
    withdrawn = _forwarded(db, tasks, "revoked")
    peer = Peer(ident)
    fwd = Forwarder(db, ident, peer, tasks, timeout_s=3)

    def snap(tid: str) -> dict[str, object]:
        ev = {"at": NOW, "attempt": 1, "state": "COMPLETE", "message": "complete on cn.52/gz/host"}
        return {"id": tid, "state": "COMPLETE", "attempt": 1, "events": [ev]}

    try:
        assert fwd.handle_update(other, {"tasks": [snap(running)]}) == {"applied": []}
        assert tasks.get(running).state.value == "QUEUED"  # cn.44 does not run it
        body = {"tasks": [snap(running), snap(withdrawn)]}
        assert fwd.handle_update(gz, body) == {"applied": [running]}
    finally:
        peer.close()
    assert tasks.get(running).state.value == "COMPLETE"
    assert tasks.get(withdrawn).state.value == "QUEUED"  # withdrawn: not gz's to report
