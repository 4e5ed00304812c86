"""Forwarding bookkeeping that needs no second node: a placed pool that vanished."""

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
from fedproc import NOW


def test_task_on_a_pool_that_left_the_index_is_requeued(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    upgrade(db)
    ident = root_identity("cn", "http://cn", NOW)
    tasks = TaskService(db, "cn", lambda: None)
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
