"""A wake-up signal that worker threads can fire and the event loop can await."""

from __future__ import annotations

import asyncio
import contextlib


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
