"""A wake-up signal that worker threads can fire and the event loop can await."""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    """Fire from any thread; ``wait`` returns when fired after it began, or on timeout."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

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
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next ``fire``; True if fired, False on timeout."""
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
