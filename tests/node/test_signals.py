"""The node's wake-up signals: a firing while a loop works is not lost, and a commit wakes
only those who act on the tasks it moved."""

from __future__ import annotations

import asyncio
import threading

from computenet.node.signals import Changes, Signal, TaskSignals
from computenet.tasks.lifecycle import Phase
from computenet.tasks.transitions import MOVES, Moved


def test_a_firing_during_the_work_wakes_the_wait_after_it_at_once() -> None:
    async def main() -> tuple[bool, bool, bool]:
        sig = Signal()
        sig.bind(asyncio.get_running_loop())
        seen = sig.mark()
        # The work, in a worker thread as the node runs it, fires (a submission meanwhile).
        await asyncio.to_thread(sig.fire)
        woke = await sig.wait(30.0, since=seen)  # would take 30 s if the firing were lost
        # Without a mark, only a later firing counts: this one times out.
        later = await sig.wait(0.01)
        # And a mark taken after the firing waits for the next one.
        quiet = await sig.wait(0.01, since=sig.mark())
        return woke, later, quiet

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (True, False, False)


def test_a_firing_from_another_thread_wakes_a_waiter() -> None:
    async def main() -> bool:
        sig = Signal()
        sig.bind(asyncio.get_running_loop())
        seen = sig.mark()
        threading.Timer(0.05, sig.fire).start()
        return await sig.wait(30.0, since=seen)

    assert asyncio.run(asyncio.wait_for(main(), 10)) is True


T1, T2 = "cn.31-T1", "cn.31-T2"


def _woken(moved: list[Moved]) -> dict[str, bool]:
    """Which of the node's wake-ups a commit with ``moved`` fires (and for tasks T1, T2)."""

    async def main() -> dict[str, bool]:
        changes = Changes("cn.31")
        changes.bind(asyncio.get_running_loop())
        named = {
            "any": changes.any,
            "queue": changes.queue,
            "placed": changes.placed,
            "federation": changes.federation,
        }
        marks = {k: s.mark() for k, s in named.items()}
        with changes.tasks.watch(T1) as t1, changes.tasks.watch(T2) as t2:
            seen1, seen2 = t1.mark(), t2.mark()
            await asyncio.to_thread(changes.committed, {MOVES: moved})
            await asyncio.sleep(0)  # the firings are scheduled on the loop from the thread
            out = {k: await s.wait(0.01, since=marks[k]) for k, s in named.items()}
            out["t1"] = await t1.wait(0.01, since=seen1)
            out["t2"] = await t2.wait(0.01, since=seen2)
        return out

    return asyncio.run(asyncio.wait_for(main(), 10))


def test_a_commit_wakes_only_who_acts_on_its_moves() -> None:
    w, p = Phase.WAITING, Phase.PLACED
    # A submission: the scheduler, not the gateways' lease long-polls.
    assert _woken([Moved("cn.31-A", None, w)]) == {
        "any": True, "queue": True, "placed": False, "federation": False, "t1": False,
        "t2": False,
    }  # fmt: skip
    # A placement on a local pool: the lease long-polls, not the scheduler again.
    assert _woken([Moved(T1, w, p, "cn.31/gw/host")]) == {
        "any": True, "queue": False, "placed": True, "federation": False, "t1": True,
        "t2": False,
    }  # fmt: skip
    # Leased, running: only the task's own long-polls.
    on_gw = _woken(
        [Moved("cn.31-A", p, Phase.LEASED), Moved("cn.31-A", Phase.LEASED, Phase.RUNNING)]
    )
    assert on_gw == {
        "any": True, "queue": False, "placed": False, "federation": False, "t1": False,
        "t2": False,
    }  # fmt: skip
    # Finished: capacity is free again, the scheduler looks.
    assert _woken([Moved("cn.31-A", Phase.RUNNING, Phase.COMPLETE)])["queue"]
    assert _woken([Moved("cn.31-A", p, Phase.CANCELED)])["queue"]
    assert not _woken([Moved("cn.31-A", Phase.RUNNING, Phase.CANCELING)])["queue"]


def test_the_federation_loop_is_woken_only_by_tasks_that_cross_nodes() -> None:
    p = Phase.PLACED
    assert not _woken([Moved("cn.31-A", Phase.WAITING, p, "cn.31/gw/host")])["federation"]
    # Placed on another node's pool (a child's is another node's too): forward it.
    assert _woken([Moved("cn.31-A", Phase.WAITING, p, "cn.52/gw/host")])["federation"]
    assert _woken([Moved("cn.31-A", Phase.WAITING, p, "cn.31.ai/gw/host")])["federation"]
    # A task another node forwarded here: push it back once handed out or ended; queued
    # here (created, placed) is no news to the node that forwarded it.
    assert _woken([Moved("cn.52-B", Phase.LEASED, Phase.RUNNING)])["federation"]
    assert _woken([Moved("cn.3-B", Phase.PLACED, Phase.LEASED)])["federation"]
    assert _woken([Moved("cn.52-B", Phase.RUNNING, Phase.COMPLETE)])["federation"]
    assert not _woken([Moved("cn.52-B", None, Phase.WAITING)])["federation"]
    assert not _woken([Moved("cn.52-B", Phase.WAITING, p, "cn.31/gw/host")])["federation"]
    # One of ours forwarded elsewhere: cancel it there, also once it runs there.
    assert _woken([Moved("cn.31-A", Phase.FORWARDED, Phase.CANCELING)])["federation"]
    assert _woken([Moved("cn.31-A", Phase.RUNNING, Phase.CANCELING)])["federation"]
    # One forwarded here that lost its lease is news to its origin (it showed it running).
    assert _woken([Moved("cn.52-B", Phase.RUNNING, Phase.WAITING)])["federation"]


def test_a_task_signal_lives_while_watched_and_shutdown_wakes_every_watcher() -> None:
    async def main() -> tuple[bool, bool]:
        tasks = TaskSignals()
        tasks.bind(asyncio.get_running_loop())
        with tasks.watch("t1") as a, tasks.watch("t1") as b:
            assert a is b  # one signal per task, however many wait on it
            seen = a.mark()
            await asyncio.to_thread(tasks.fire_all)
            woke = await a.wait(10.0, since=seen)
        with tasks.watch("t1") as c:
            fresh = c is not a  # dropped when its last watcher left
        assert not tasks._watched
        return woke, fresh

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (True, True)


def test_pools_changing_wake_the_scheduler_and_the_live_view() -> None:
    async def main() -> tuple[bool, bool, bool]:
        changes = Changes("cn")
        changes.bind(asyncio.get_running_loop())
        marks = (changes.queue.mark(), changes.any.mark(), changes.placed.mark())
        await asyncio.to_thread(changes.pools_changed)
        return (
            await changes.queue.wait(1.0, since=marks[0]),
            await changes.any.wait(1.0, since=marks[1]),
            await changes.placed.wait(0.01, since=marks[2]),
        )

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (True, True, False)
