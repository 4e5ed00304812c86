"""Wake-up signals that worker threads fire and the event loop awaits, and what wakes which.

A task's change of phase is noted in its transaction (:func:`computenet.tasks.transitions.moves`)
and, once that commits, :class:`Changes` wakes only those who wait on it: the scheduler when a
task waits or capacity is freed, the gateways' lease long-polls when a task is placed, the
federation's loop when a task that crosses nodes moves, and the long-polls on that one task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from computenet.model.ids import origin_of
from computenet.tasks.lifecycle import HOLDING_PHASES, Phase
from computenet.tasks.transitions import Moved, moves


class Signal:
    """Fire from any thread; ``wait`` returns when fired after it began (or after the
    ``mark`` it is given), or on timeout.

    A loop that does work and then waits should take a ``mark`` before the work and wait
    ``since`` it: a firing while the work ran then wakes it at once instead of being lost
    until the timeout (the timeout stays as a safety net, so a lost wake-up only costs time).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._fired = 0  # firings so far; counted on the loop's thread

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the running loop (the node does this at start-up)."""
        self._loop = loop
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake every waiter. Safe from worker threads."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shutting down
            loop.call_soon_threadsafe(self._swap)

    def _swap(self) -> None:
        # Each firing sets the current event and installs a fresh one, so a waiter that
        # grabbed the old event wakes and none is woken by a firing from before it began.
        self._fired += 1
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()

    def mark(self) -> int:
        """How many times it has fired so far: pass it to ``wait`` as ``since``."""
        return self._fired

    async def wait(self, timeout_s: float, since: int | None = None) -> bool:
        """Wait for the next ``fire`` (or return at once if it fired after ``since``);
        True if fired, False on timeout."""
        if since is not None and self._fired != since:
            return True
        event = self._event
        if event is None:
            await asyncio.sleep(timeout_s)
            return False
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that comes
            # as the event fires, and then a loop waiting here never stops.
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            return False
        return True


class TaskSignals:
    """One :class:`Signal` per task that someone waits on (a long-poll on that task), so a
    change wakes the waiters of that task only. Signals exist only while watched."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[str, tuple[Signal, int]] = {}  # task id -> signal, watchers

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the running loop (the node does this at start-up)."""
        self._loop = loop

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[Signal]:
        """The signal of ``task_id`` while the caller waits on it (on the loop's thread)."""
        signal, watchers = self._watched.get(task_id, (None, 0))
        if signal is None:
            signal = Signal()
            if self._loop is not None:
                signal.bind(self._loop)
        self._watched[task_id] = (signal, watchers + 1)
        try:
            yield signal
        finally:
            signal, watchers = self._watched[task_id]
            if watchers == 1:
                del self._watched[task_id]
            else:
                self._watched[task_id] = (signal, watchers - 1)

    def fire(self, task_ids: Iterable[str]) -> None:
        """Wake the waiters of these tasks. Safe from worker threads."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shutting down
            loop.call_soon_threadsafe(self._fire, tuple(task_ids))

    def fire_all(self) -> None:
        """Wake every waiter (the node is shutting down). Safe from worker threads."""
        self.fire(list(self._watched))

    def _fire(self, task_ids: tuple[str, ...]) -> None:
        for tid in task_ids:
            entry = self._watched.get(tid)
            if entry is not None:
                entry[0]._swap()


class Changes:
    """The node's wake-ups, each for those who act on one kind of change."""

    def __init__(self, node_code: str) -> None:
        self.any = Signal()  # every change: the console's live view
        self.queue = Signal()  # a task waits, or capacity was freed: the scheduler
        self.placed = Signal()  # a task was placed: gateways' lease long-polls
        self.federation = Signal()  # a task that crosses nodes moved: the forwarding loop
        self.tasks = TaskSignals()  # per task: long-polls on one task
        self._code = node_code
        self._prefix = f"{node_code}/"

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach every signal to the running loop."""
        for signal in (self.any, self.queue, self.placed, self.federation):
            signal.bind(loop)
        self.tasks.bind(loop)

    def pools_changed(self) -> None:
        """Pools came, came back or went silent, here or in the federation's index: the
        scheduler looks again, and the console's live view shows it."""
        self.queue.fire()
        self.any.fire()

    def fire_all(self) -> None:
        """Wake everyone (shutting down: long-polls return at once)."""
        for signal in (self.any, self.queue, self.placed, self.federation):
            signal.fire()
        self.tasks.fire_all()

    def committed(self, info: dict[str, Any]) -> None:
        """A write transaction committed (the database's hook): wake who waits on its moves."""
        moved = moves(info)
        if not moved:
            return
        self.any.fire()
        self.tasks.fire(m.task_id for m in moved)
        if any(_frees_or_queues(m) for m in moved):
            self.queue.fire()
        if any(m.after is Phase.PLACED for m in moved):
            self.placed.fire()
        if any(self._crosses_nodes(m) for m in moved):
            self.federation.fire()

    def _crosses_nodes(self, m: Moved) -> bool:
        """Whether the federation's loop has something to do about ``m``: a task placed on
        another node's pool (forward it), one forwarded there (cancel it there), or one
        another node forwarded here that was handed out, ended or came back to the queue
        (push it to that node; one not yet handed out is not pushed, see
        ``Forwarder.push_updates``)."""
        if m.after is Phase.PLACED and m.pool_cpi is not None:
            return not m.pool_cpi.startswith(self._prefix)
        if origin_of(m.task_id) != self._code:
            return m.after not in _QUEUED or m.before not in (None, *_QUEUED)
        # A cancel of one running elsewhere (mirrored as leased or running) goes there too.
        return Phase.FORWARDED in (m.before, m.after) or m.after is Phase.CANCELING


_QUEUED = (Phase.WAITING, Phase.PLACED)  # queued here, not yet handed out


def _frees_or_queues(m: Moved) -> bool:
    """A task now waits for a pool, or gave back the capacity it held."""
    freed = m.before in HOLDING_PHASES and m.after not in HOLDING_PHASES
    return m.after is Phase.WAITING or freed
