"""The task lifecycle: every (phase, event) pair, in the pure table and through the store."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from computenet.federation.keys import CertBody
from computenet.federation.mirror import mirror_task
from computenet.model.task import TERMINAL_STATES, TaskState
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_federation import FedForward
from computenet.tasks.lifecycle import (
    LIVE_STATES,
    TERMINAL_PHASES,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Phase,
    apply,
    is_terminal,
    mirrored,
    phase_of,
    reported,
    tes_state,
)
from computenet.tasks.transitions import current_phase, move, move_by_id

NOW = datetime(2026, 12, 1, tzinfo=UTC)
PAIRS = list(itertools.product(Phase, Event))


def test_every_pair_is_applied_or_refused() -> None:
    allowed = 0
    for phase, event in PAIRS:
        if (phase, event) in TRANSITIONS:
            assert apply(phase, event) is TRANSITIONS[(phase, event)]
            allowed += 1
        else:
            with pytest.raises(IllegalTransition) as err:
                apply(phase, event)
            assert err.value.phase is phase and err.value.event is event
    assert 0 < allowed < len(PAIRS)


def test_terminal_phases_are_the_tes_terminal_states() -> None:
    assert {tes_state(p) for p in TERMINAL_PHASES} == TERMINAL_STATES
    assert all(is_terminal(p) == tes_state(p).terminal for p in Phase)
    assert set(LIVE_STATES) == {"QUEUED", "INITIALIZING", "RUNNING", "CANCELING"}


def test_a_terminal_state_is_never_overwritten() -> None:
    for phase, event in PAIRS:
        if is_terminal(phase):
            assert (phase, event) not in TRANSITIONS


def test_a_cancel_asked_here_stands_until_the_owner_reports_final() -> None:
    for state in (TaskState.QUEUED, TaskState.INITIALIZING, TaskState.RUNNING):
        assert apply(Phase.CANCELING, mirrored(state)) is Phase.CANCELING
    assert apply(Phase.CANCELING, mirrored(TaskState.COMPLETE)) is Phase.COMPLETE


def test_reported_and_mirrored_events_cover_their_states() -> None:
    for state in TaskState:
        if state in (TaskState.UNKNOWN, TaskState.PAUSED):
            continue
        assert mirrored(state).value.startswith("mirrored")
    assert reported(TaskState.EXECUTOR_ERROR) is Event.REPORTED_EXECUTOR_ERROR


# ---- through the store --------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(sqlite_url(tmp_path))
    upgrade(d)
    yield d
    d.dispose()


def _columns(phase: Phase) -> dict[str, object]:
    """Stored columns of a task in ``phase`` (set directly: this is the test's fixture)."""
    cols: dict[str, object] = {"state": tes_state(phase).value}
    if phase in (Phase.PLACED, Phase.FORWARDED):
        cols["pool_cpi"] = "cn/acme/cpu"
    if phase in (Phase.LEASED, Phase.RUNNING, Phase.CANCELING):
        cols.update(pool_cpi="cn/acme/cpu", lease_id=None)
    return cols


def _seed(db: Database, tid: str, seq: int, phase: Phase) -> None:
    with db.write() as s:
        s.execute(
            insert(t.Task).values(
                id=tid,
                seq=seq,
                owner="alice",
                spec={},
                cpu_cores=1,
                memory_mib=1,
                accelerators=0,
                attempt=1,
                reason="",
                cancel_requested=False,
                created_at=NOW,
                updated_at=NOW,
                tags={},
                **_columns(phase),
            )
        )
        if phase is Phase.FORWARDED:
            s.add(
                FedForward(
                    task_id=tid,
                    target="cn.52",
                    target_url="http://x",
                    pool_cpi="cn/acme/cpu",
                    state="sent",
                    events_seen=0,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )


def _events(db: Database, tid: str) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).where(t.TaskEvent.task_id == tid)) or 0)


def test_the_store_applies_allowed_pairs_and_refuses_and_logs_the_rest(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="computenet.lifecycle")
    for i, (phase, event) in enumerate(PAIRS):
        tid = f"cn-{i:026d}"
        _seed(db, tid, i + 1, phase)
        with db.read() as s:
            row = s.get(t.Task, tid)
            assert row is not None
            assert current_phase(s, row) is phase
        caplog.clear()
        target = TRANSITIONS.get((phase, event))
        with db.write() as s:
            row = s.get(t.Task, tid)
            assert row is not None
            if target is None:
                with pytest.raises(IllegalTransition):
                    move(s, row, event, NOW, "x")
                assert f"refused event {event.value!r} on task {tid}" in caplog.text
            else:
                assert move(s, row, event, NOW, "x") is target
                assert row.state == tes_state(target).value  # the loaded row follows
        with db.read() as s:
            row = s.get(t.Task, tid)
            assert row is not None
            expected = target or phase
            assert row.state == tes_state(expected).value, (phase, event)
        # An event row for every change of phase, none otherwise.
        assert _events(db, tid) == (1 if target not in (None, phase) else 0), (phase, event)


def test_a_stale_writer_changes_nothing(db: Database) -> None:
    _seed(db, "cn-" + "0" * 26, 1, Phase.PLACED)
    with db.write() as s:
        assert not move_by_id(s, "cn-" + "0" * 26, Phase.WAITING, Event.PLACED, NOW, "x")
    assert _events(db, "cn-" + "0" * 26) == 0


def test_phase_of_needs_a_live_forward_to_say_forwarded() -> None:
    assert phase_of("QUEUED", None, False) is Phase.WAITING
    assert phase_of("QUEUED", "cn/a/b", False) is Phase.PLACED
    assert phase_of("QUEUED", "cn/a/b", True) is Phase.FORWARDED
    with pytest.raises(ValueError):
        phase_of("PAUSED", None, False)


def test_a_mirrored_final_state_does_not_overwrite_a_local_final_state(db: Database) -> None:
    tid = "cn-" + "1" * 26
    _seed(db, tid, 1, Phase.FORWARDED)
    with db.write() as s:
        row = s.get(t.Task, tid)
        assert row is not None
        move(s, row, Event.CANCEL_REQUESTED, NOW, "canceled before it was dispatched")
        fwd = s.get(FedForward, tid)
        assert fwd is not None
        fwd.state = "confirmed"  # the owner had confirmed it meanwhile
    owner = CertBody(
        code="cn.52", level="province", url="http://x", public_key="k", issuer="cn", issued_at=""
    )
    snap = {"id": tid, "state": "COMPLETE", "attempt": 1, "events": [], "attempts": []}
    mirror_task(db, owner, snap, NOW)
    with db.read() as s:
        row = s.get(t.Task, tid)
        fwd = s.get(FedForward, tid)
        assert row is not None and fwd is not None
        assert row.state == "CANCELED"
        assert fwd.state == "done"
