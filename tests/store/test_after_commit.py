"""The store's after-commit hooks: called once a write has committed, never for one rolled
back, and a failing hook does not make a committed write look failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from computenet.store.db import Database


def test_hooks_see_a_committed_writes_info_and_never_a_rolled_back_one(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    seen: list[dict[str, Any]] = []
    db.after_commit.append(lambda info: seen.append(dict(info)))
    with db.write() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
        s.info["note"] = 1
    assert seen == [{"note": 1}]
    with pytest.raises(RuntimeError), db.write() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
        s.info["note"] = 2
        raise RuntimeError("rolled back")
    with db.write() as s:
        s.execute(text("INSERT INTO t VALUES (3)"))  # noted nothing: no call
    assert seen == [{"note": 1}]


def test_a_failing_hook_does_not_fail_the_committed_write(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    after: list[int] = []

    def broken(_info: dict[str, Any]) -> None:
        raise ValueError("hook bug")

    db.after_commit += [broken, lambda info: after.append(info["n"])]
    with db.write() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (7)"))
        s.info["n"] = 7
    assert after == [7]  # the next hook still ran
    with db.read() as s:
        assert s.execute(text("SELECT x FROM t")).scalar() == 7
    db.dispose()
