"""Time for the node's services, injected so tests can move it without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

Clock = Callable[[], datetime]
T = TypeVar("T")


def utcnow() -> datetime:
    """The current time, aware, in UTC (the default :data:`Clock`)."""
    return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told: for tests of expiry, windows and timeouts."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward; return the new time."""
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)
        return self.now


def cpu_timed(work: Callable[[], T]) -> tuple[T, float]:
    """Run ``work`` in this thread; return its result and the CPU time it took (seconds).

    Background loops space their rounds by this, not by wall time: on a busy host a round
    also waits for the CPU and for its peers, which costs the host nothing.
    """
    began = time.thread_time()
    out = work()
    return out, time.thread_time() - began
