"""The pool index: deltas, full replacement, prefix checks, pages down, remote pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from computenet.federation.index import PoolIndex
from computenet.federation.keys import OutsidePrefix
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade


@pytest.fixture
def index(tmp_path: Path) -> PoolIndex:
    db = Database(sqlite_url(tmp_path))
    upgrade(db)
    return PoolIndex(db, "cn", "http://cn")


def rec(cpi: str, cores: int = 4, health: str = "healthy") -> dict[str, Any]:
    return {
        "cpi": cpi,
        "node": cpi.split("/")[0],
        "served_by_url": "http://x",
        "health": health,
        "spec": {"label": cpi.split("/")[2], "cpu_cores": cores, "memory_mib": 1024},
    }


def test_deltas_full_replacement_and_change_numbers(index: PoolIndex) -> None:
    seen: list[list[str]] = []
    index.on_change.append(seen.append)
    assert index.apply("cn.31", [rec("cn.31/a/p"), rec("cn.31.ai/b/q")], full=True) == 2
    assert index.apply("cn.31", [rec("cn.31/a/p")], full=False) == 0  # unchanged: no change
    assert index.apply("cn.31", [rec("cn.31/a/p", cores=8)], full=False) == 1
    assert index.apply("cn.31", [rec("cn.31/a/p", cores=8)], full=True) == 1  # q dropped
    assert [r.cpi for r in index.rows(None, 0, 10)] == ["cn.31/a/p"]
    assert seen[-1] == ["cn.31.ai/b/q"]
    seqs = [r.seq for r in index.rows(None, 0, 10)]
    assert seqs == sorted(seqs)


def test_records_outside_the_sender_prefix_are_refused(index: PoolIndex) -> None:
    index.check_within("cn.31", [rec("cn.31/a/p"), rec("cn.31.ai/a/p")])
    with pytest.raises(OutsidePrefix):
        index.check_within("cn.31", [rec("cn.31/a/p"), rec("cn.52/a/p")])
    with pytest.raises(OutsidePrefix):
        index.check_within("cn.31", [rec("cn.310/a/p")])


def test_pages_down_skip_the_child_subtree_and_silence_hides_pools(index: PoolIndex) -> None:
    index.apply("cn.31", [rec("cn.31/a/p")], full=True)
    index.apply("cn.52", [rec("cn.52/g/p"), rec("cn.52/g/q")], full=True)
    records, upto, more = index.page_for("cn.31", 0)
    assert sorted(r["cpi"] for r in records) == ["cn.52/g/p", "cn.52/g/q"] and not more
    assert index.page_for("cn.31", upto)[0] == []
    with index.db.read() as s:
        assert len(index.remote_pools(s)) == 3
    assert index.mark_unavailable("cn.52") == 2
    with index.db.read() as s:
        assert [v.cpi for v in index.remote_pools(s)] == ["cn.31/a/p"]
    changed, _, _ = index.page_for("cn.31", upto)
    assert {r["health"] for r in changed} == {"unavailable"}


def test_remote_pools_carry_the_free_capacity_their_owner_reports(index: PoolIndex) -> None:
    busy = {**rec("cn.31/a/p", cores=8), "free": {"cpu_cores": 3, "memory_mib": 512}}
    index.apply("cn.31", [busy, rec("cn.31/a/q", cores=8)], full=True)
    with index.db.read() as s:
        views = {v.cpi: v.free for v in index.remote_pools(s)}
    assert (views["cn.31/a/p"].cpu_cores, views["cn.31/a/p"].memory_mib) == (3, 512)
    assert views["cn.31/a/q"].cpu_cores == 8  # no figure: its total
    # A later report changes it (a new change number re-reads the record).
    index.apply("cn.31", [{**busy, "free": {"cpu_cores": 8, "memory_mib": 1024}}], full=False)
    with index.db.read() as s:
        assert {v.cpi: v.free.cpu_cores for v in index.remote_pools(s)}["cn.31/a/p"] == 8


def test_own_records_report_what_running_work_leaves_free(index: PoolIndex) -> None:
    from datetime import UTC, datetime

    from computenet.store import tables as t

    now = datetime.now(UTC)
    spec = {"label": "p", "cpu_cores": 8, "memory_mib": 4096}
    with index.db.write() as s:
        s.add(t.Provider(prefix="cn/a", name="a", created_at=now))
        s.flush()  # rows that others refer to go first
        s.add(t.Gateway(id="g", provider_prefix="cn/a", name="gw", created_at=now))
        s.flush()
        s.add(
            t.Pool(
                cpi="cn/a/p", provider_prefix="cn/a", gateway_id="g", spec=spec, health="healthy",
                running_tasks=1, last_heartbeat_at=now, updated_at=now, version=1,
            )
        )  # fmt: skip
        s.flush()
        s.add(
            t.Task(
                id="cn-1", seq=1, owner="u", state="RUNNING", spec={}, priority=0, cpu_cores=3,
                memory_mib=1000, accelerators=0, pool_cpi="cn/a/p", created_at=now, updated_at=now,
            )
        )  # fmt: skip
    assert index.refresh_own() == 1
    [row] = index.rows("cn", 0, 10)
    assert row.record["free"] == {"cpu_cores": 5, "memory_mib": 3096, "accelerators": 0}
