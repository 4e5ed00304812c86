"""The node's wake-up signal: a firing while a loop works is not lost."""

from __future__ import annotations

import asyncio
import threading

from computenet.node.signals import Signal


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
