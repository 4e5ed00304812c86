"""The task lifecycle: phases, events and the one table of legal transitions. No I/O.

A task's TES state is too coarse to schedule by: QUEUED hides whether it waits for the
scheduler, is placed on a pool, or was forwarded to another node. A :class:`Phase` names
each of these; the TES state is a function of the phase (:func:`tes_state`). Every change
of phase is an :class:`Event` applied by :func:`apply`, which refuses what the table does
not allow. The store writes phases through :mod:`computenet.tasks.transitions` only.

Phases are derived from the stored columns (``state``, ``pool_cpi`` and whether a live
forward exists) by :func:`phase_of`, so no migration was needed to introduce them.
"""

from __future__ import annotations

from enum import StrEnum

from computenet.errors import Conflict
from computenet.model.task import TaskState


class Phase(StrEnum):
    """Where a task is in its life."""

    WAITING = "waiting"  # queued, no pool chosen yet
    PLACED = "placed"  # queued on a local or remote pool, not yet leased or forwarded
    FORWARDED = "forwarded"  # handed to the node that owns its pool (remote QUEUED)
    LEASED = "leased"  # a gateway holds it and is preparing it (INITIALIZING)
    RUNNING = "running"
    CANCELING = "canceling"  # cancel asked of the gateway (or remote node) running it
    COMPLETE = "complete"
    EXECUTOR_ERROR = "executor_error"
    SYSTEM_ERROR = "system_error"
    CANCELED = "canceled"
    PREEMPTED = "preempted"  # only ever mirrored from a remote node; ours are re-queued


class Event(StrEnum):
    """Something that happens to a task."""

    PLACED = "placed"  # the scheduler chose a pool
    UNPLACED = "unplaced"  # the pool went silent or left the index; choose again
    FORWARDED = "forwarded"  # sent to the pool's owner node
    FORWARD_WITHDRAWN = "forward withdrawn"  # the owner did not confirm in time
    PREEMPTED = "preempted"  # room made for a more urgent task; back to the queue
    LEASED = "leased"  # a gateway took it
    SETUP_FAILED = "setup failed"  # it cannot be handed out (a secret it names is gone)
    REPORTED_INITIALIZING = "reported initializing"  # still preparing: no change
    REPORTED_RUNNING = "reported running"
    REPORTED_COMPLETE = "reported complete"
    REPORTED_EXECUTOR_ERROR = "reported executor error"
    REPORTED_SYSTEM_ERROR = "reported system error"
    REPORTED_CANCELED = "reported canceled"
    LEASE_LOST = "lease lost"  # expired or handed back: re-queued (canceled if canceling)
    GAVE_UP = "gave up"  # lease lost with no attempts left
    CANCEL_REQUESTED = "cancel requested"
    MIRRORED_QUEUED = "mirrored queued"  # the owner node's state of a forwarded task
    MIRRORED_INITIALIZING = "mirrored initializing"
    MIRRORED_RUNNING = "mirrored running"
    MIRRORED_CANCELING = "mirrored canceling"
    MIRRORED_COMPLETE = "mirrored complete"
    MIRRORED_EXECUTOR_ERROR = "mirrored executor error"
    MIRRORED_SYSTEM_ERROR = "mirrored system error"
    MIRRORED_CANCELED = "mirrored canceled"
    MIRRORED_PREEMPTED = "mirrored preempted"


class IllegalTransition(Conflict):
    """An event the task's phase does not allow (a stale or out-of-order writer)."""

    def __init__(self, phase: Phase, event: Event) -> None:
        super().__init__(f"a {phase.value} task cannot take the event {event.value!r}")
        self.phase = phase
        self.event = event


_TES = {
    Phase.WAITING: TaskState.QUEUED,
    Phase.PLACED: TaskState.QUEUED,
    Phase.FORWARDED: TaskState.QUEUED,
    Phase.LEASED: TaskState.INITIALIZING,
    Phase.RUNNING: TaskState.RUNNING,
    Phase.CANCELING: TaskState.CANCELING,
    Phase.COMPLETE: TaskState.COMPLETE,
    Phase.EXECUTOR_ERROR: TaskState.EXECUTOR_ERROR,
    Phase.SYSTEM_ERROR: TaskState.SYSTEM_ERROR,
    Phase.CANCELED: TaskState.CANCELED,
    Phase.PREEMPTED: TaskState.PREEMPTED,
}

_W, _P, _F, _L, _R, _C = (
    Phase.WAITING,
    Phase.PLACED,
    Phase.FORWARDED,
    Phase.LEASED,
    Phase.RUNNING,
    Phase.CANCELING,
)
_REPORTED_FINAL = {
    Event.REPORTED_COMPLETE: Phase.COMPLETE,
    Event.REPORTED_EXECUTOR_ERROR: Phase.EXECUTOR_ERROR,
    Event.REPORTED_SYSTEM_ERROR: Phase.SYSTEM_ERROR,
    Event.REPORTED_CANCELED: Phase.CANCELED,
}
_MIRRORED_LIVE = {
    Event.MIRRORED_QUEUED: _F,
    Event.MIRRORED_INITIALIZING: _L,
    Event.MIRRORED_RUNNING: _R,
    Event.MIRRORED_CANCELING: _C,
}
_MIRRORED_FINAL = {
    Event.MIRRORED_COMPLETE: Phase.COMPLETE,
    Event.MIRRORED_EXECUTOR_ERROR: Phase.EXECUTOR_ERROR,
    Event.MIRRORED_SYSTEM_ERROR: Phase.SYSTEM_ERROR,
    Event.MIRRORED_CANCELED: Phase.CANCELED,
    Event.MIRRORED_PREEMPTED: Phase.PREEMPTED,
}

# The one table. A target equal to the source phase is legal and changes nothing.
TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (_W, Event.PLACED): _P,
    (_W, Event.CANCEL_REQUESTED): Phase.CANCELED,
    (_P, Event.UNPLACED): _W,
    (_P, Event.PREEMPTED): _W,
    (_P, Event.FORWARDED): _F,
    (_P, Event.LEASED): _L,
    (_P, Event.SETUP_FAILED): Phase.SYSTEM_ERROR,
    (_P, Event.CANCEL_REQUESTED): Phase.CANCELED,
    (_F, Event.FORWARD_WITHDRAWN): _W,
    (_F, Event.UNPLACED): _W,
    # An unleased task is canceled here at once; the forwarder tells the owner node.
    (_F, Event.CANCEL_REQUESTED): Phase.CANCELED,
    (_L, Event.REPORTED_RUNNING): _R,
    (_L, Event.LEASE_LOST): _W,
    (_L, Event.PREEMPTED): _W,
    (_L, Event.GAVE_UP): Phase.SYSTEM_ERROR,
    (_L, Event.CANCEL_REQUESTED): _C,
    (_R, Event.REPORTED_RUNNING): _R,
    (_R, Event.LEASE_LOST): _W,
    (_R, Event.PREEMPTED): _W,
    (_R, Event.GAVE_UP): Phase.SYSTEM_ERROR,
    (_R, Event.CANCEL_REQUESTED): _C,
    (_C, Event.REPORTED_RUNNING): _C,
    (_C, Event.CANCEL_REQUESTED): _C,
    # Stopping is what was asked: however the lease ends, the task ends canceled.
    (_C, Event.LEASE_LOST): Phase.CANCELED,
    (_C, Event.PREEMPTED): Phase.CANCELED,
    (_C, Event.GAVE_UP): Phase.CANCELED,
}
for _phase in (_L, _R, _C):
    TRANSITIONS[(_phase, Event.REPORTED_INITIALIZING)] = _phase
    for _event, _target in _REPORTED_FINAL.items():
        TRANSITIONS[(_phase, _event)] = _target
for _phase in (_F, _L, _R, _C):
    for _event, _target in _MIRRORED_FINAL.items():
        TRANSITIONS[(_phase, _event)] = _target
    for _event, _target in _MIRRORED_LIVE.items():
        # A cancel asked here stands until the owner reports the task final.
        TRANSITIONS[(_phase, _event)] = _C if _phase is _C else _target


def apply(phase: Phase, event: Event) -> Phase:
    """The phase after ``event``; :class:`IllegalTransition` when the table has no entry."""
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalTransition(phase, event) from None


def tes_state(phase: Phase) -> TaskState:
    """The GA4GH TES state a task in ``phase`` shows."""
    return _TES[phase]


def is_terminal(phase: Phase) -> bool:
    """True for phases no event leaves."""
    return not any(p is phase for p, _ in TRANSITIONS)


TERMINAL_PHASES = frozenset(p for p in Phase if is_terminal(p))
LIVE_PHASES = frozenset(Phase) - TERMINAL_PHASES
# Phases whose task holds its pool's capacity (placed on it, or handed to its gateway).
HOLDING_PHASES = frozenset(p for p in LIVE_PHASES if p is not Phase.WAITING)
# Phases in which a gateway (or the owner node) has the task: leases may exist.
HANDED_OUT_PHASES = frozenset(p for p in LIVE_PHASES if tes_state(p) is not TaskState.QUEUED)


def states_of(phases: frozenset[Phase]) -> tuple[str, ...]:
    """The TES state values of ``phases``, sorted, for SQL ``IN`` clauses."""
    return tuple(sorted({tes_state(p).value for p in phases}))


LIVE_STATES = states_of(LIVE_PHASES)  # not yet final
HOLDING_STATES = states_of(HOLDING_PHASES)  # with a pool_cpi set: capacity held on it
HANDED_OUT_STATES = states_of(HANDED_OUT_PHASES)  # INITIALIZING, RUNNING, CANCELING
TERMINAL_STATES = states_of(TERMINAL_PHASES)


def lease_lost_event(
    phase: Phase, attempt: int, max_attempts: int, cause: Event = Event.LEASE_LOST
) -> Event:
    """The event a lost lease applies (``cause``: expired or handed back, or preempted):
    a task that has had ``max_attempts`` attempts gives up instead of going back to the
    queue; one being cancelled ends cancelled whatever its count. The live dispatcher and
    the in-memory apply step (:mod:`computenet.tasks.placement`) both decide by it."""
    if phase is not Phase.CANCELING and attempt >= max_attempts:
        return Event.GAVE_UP
    return cause


def phase_of(state: str | TaskState, pool_cpi: str | None, forwarded: bool) -> Phase:
    """The phase of a stored task: its TES state, whether it has a pool, and whether a
    forward of it to another node is live (sent or confirmed)."""
    st = TaskState(state)
    if st is TaskState.QUEUED:
        if pool_cpi is None:
            return Phase.WAITING
        return Phase.FORWARDED if forwarded else Phase.PLACED
    for phase, tes in _TES.items():
        if tes is st and phase not in (_W, _P, _F):
            return phase
    raise ValueError(f"no phase shows the TES state {st.value}")  # UNKNOWN, PAUSED: unused


def reported(state: TaskState) -> Event:
    """The event of a gateway reporting ``state``."""
    return Event(f"reported {state.value.lower().replace('_', ' ')}")


def mirrored(state: TaskState) -> Event:
    """The event of the owner node showing ``state`` for a task forwarded to it."""
    return Event(f"mirrored {state.value.lower().replace('_', ' ')}")


# The federation's own records of a forwarded task, at each end. ``None``: no record yet.
FORWARD_STEPS: dict[str | None, frozenset[str]] = {
    None: frozenset({"sent"}),
    "sent": frozenset({"confirmed", "revoked"}),
    "confirmed": frozenset({"confirmed", "done"}),  # the owner may ask again
    "revoked": frozenset({"sent"}),  # placed on a remote pool again
    "done": frozenset(),
}
INBOUND_STEPS: dict[str | None, frozenset[str]] = {
    None: frozenset({"pending"}),
    "pending": frozenset({"confirmed", "dropped"}),
    "dropped": frozenset({"pending"}),  # forwarded here again
    "confirmed": frozenset(),
}


def step_record(steps: dict[str | None, frozenset[str]], current: str | None, new: str) -> str:
    """``new`` if a forward or inbound record may go there from ``current``, else refuse."""
    if new not in steps.get(current, frozenset()):
        raise Conflict(f"a forward record cannot go from {current or 'nothing'} to {new}")
    return new
