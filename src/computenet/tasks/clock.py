"""Time for the node's services, injected so tests can move it without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


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
