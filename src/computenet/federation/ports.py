"""What the federation needs from the node that hosts it, as protocols.

The node builds the federation and hands it these (its settings, its wake-up signal, its
task service); the federation never imports the node, so the two packages have no cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from computenet.model.api import TaskOut, View
from computenet.model.task import TaskSpec, TaskState


class FederationSettings(Protocol):
    """The node settings the federation reads (enrolment may set code and level)."""

    data_dir: Path
    node_code: str
    level: str
    public_url: str
    parent_url: str | None
    enrol_token: str | None
    region: str
    fed_sync_s: float
    fed_timeout_s: float
    resolve_ttl_s: float


class Wakeup(Protocol):
    """Fired when something changed that a loop should act on."""

    def fire(self) -> None:
        """Wake every waiter; safe from any thread."""

    def mark(self) -> int:
        """A count of firings so far, for ``wait``'s ``since``."""

    async def wait(self, timeout_s: float, since: int | None = None) -> bool:
        """Wait for the next fire (at once if fired after ``since``); True if fired,
        False on timeout."""


class Tasks(Protocol):
    """The node's task service, as forwarding uses it."""

    def submit(
        self,
        spec: TaskSpec,
        owner: str,
        client_key: str | None = None,
        tenant: str | None = None,
        tid: str | None = None,
    ) -> tuple[str, bool]:
        """Store and queue a task; ``(id, created)``."""

    def get(self, tid: str, view: View = View.FULL) -> TaskOut:
        """One task at the given view."""

    def cancel(self, tid: str) -> TaskState:
        """Cancel a task."""
