"""Autoscaling decisions: a pure function of load samples, the replica policy and the time.

Up when the load per replica stays above target for ``scale_up_window_s``; down, one replica
at a time, when it stays below ``DOWN_FRACTION`` of target for ``scale_down_delay_s``
(the gap between the two thresholds is the hysteresis that keeps it from flapping). Only
samples taken since the last change count, so each step waits for a full window of the new
size's load. Always within ``[min, max]``; to zero only with ``scale_to_zero``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from computenet.model.service import ReplicaPolicy

DOWN_FRACTION = 0.6  # below 60 % of target for the delay: one replica fewer
MAX_SAMPLES = 4096  # per service: bounded whatever the sampling rate


class Load(Protocol):
    """What the autoscaler reads of the metric plane's ``ServiceLoad``."""

    @property
    def in_flight(self) -> int: ...

    @property
    def requests_per_s(self) -> float: ...

    @property
    def tokens_per_s(self) -> float | None: ...

    @property
    def per_replica(self) -> Mapping[str, int]: ...  # task id -> in flight on it


@dataclass(frozen=True)
class Sample:
    """One reading of a service's load, at ``at_s`` seconds on the controller's clock."""

    at_s: float
    in_flight: float
    requests_per_s: float = 0.0
    tokens_per_s: float | None = None


def pressure(s: Sample, replicas: int, policy: ReplicaPolicy) -> float:
    """Load per replica as a fraction of target (1.0 = on target), the larger of in-flight
    requests and tokens/s where both have a target. With no replica, any demand is
    infinite pressure and none is zero."""
    if replicas <= 0:
        busy = s.in_flight > 0 or s.requests_per_s > 0 or bool(s.tokens_per_s)
        return math.inf if busy else 0.0
    out = s.in_flight / replicas / policy.target_inflight
    if policy.target_tokens_per_s is not None and s.tokens_per_s is not None:
        out = max(out, s.tokens_per_s / replicas / policy.target_tokens_per_s)
    return out


def _held(samples: Sequence[Sample], since_s: float, now_s: float, window_s: float) -> bool:
    """Whether samples since ``since_s`` cover the last ``window_s`` seconds."""
    return bool(samples) and samples[0].at_s <= now_s - window_s and since_s <= now_s - window_s


def decide(
    samples: Sequence[Sample],
    policy: ReplicaPolicy,
    current: int,
    now_s: float,
    changed_at_s: float,
) -> int:
    """How many replicas the service should have now.

    ``samples`` are in time order; ``current`` is the replica count now; ``changed_at_s`` is
    when it last changed (samples before it describe another size and are ignored).
    """
    lo, hi = policy.min, policy.max
    if current < lo or current > hi:
        return min(max(current, lo), hi)
    recent = [s for s in samples if s.at_s >= changed_at_s]
    if not recent:
        return current
    if current == 0:
        # From zero the first request wakes it: waiting a window would fail every caller.
        return max(1, lo) if pressure(recent[-1], 0, policy) > 0 else 0
    up = [s for s in recent if s.at_s >= now_s - policy.scale_up_window_s]
    up_held = _held(recent, changed_at_s, now_s, policy.scale_up_window_s)
    if up_held and all(pressure(s, current, policy) > 1.0 for s in up):
        mean = sum(pressure(s, current, policy) for s in up) / len(up)
        want = math.ceil(current * min(mean, 1e6))
        return min(hi, max(current + 1, want))
    down = [s for s in recent if s.at_s >= now_s - policy.scale_down_delay_s]
    down_held = _held(recent, changed_at_s, now_s, policy.scale_down_delay_s)
    if down_held and all(pressure(s, current, policy) < DOWN_FRACTION for s in down):
        idle = all(pressure(s, current, policy) == 0 for s in down)
        floor = 0 if policy.scale_to_zero and idle else max(1, lo)
        return max(floor, lo, current - 1)
    return current


@dataclass
class Autoscaler:
    """Keeps each service's recent samples and when its size last changed."""

    samples: dict[str, deque[Sample]] = field(default_factory=dict)
    changed_at_s: dict[str, float] = field(default_factory=dict)

    def observe(self, name: str, load: Load, now_s: float) -> None:
        """Record one reading of ``name``'s load."""
        window = self.samples.setdefault(name, deque(maxlen=MAX_SAMPLES))
        window.append(
            Sample(now_s, float(load.in_flight), float(load.requests_per_s), load.tokens_per_s)
        )

    def step(self, name: str, policy: ReplicaPolicy, current: int, now_s: float) -> int:
        """The decision for ``name`` now; a change restarts its windows."""
        since = self.changed_at_s.setdefault(name, now_s)
        window = self.samples.get(name, deque())
        horizon = now_s - max(policy.scale_up_window_s, policy.scale_down_delay_s) - 1
        while window and window[0].at_s < max(since, horizon):
            window.popleft()
        want = decide(list(window), policy, current, now_s, since)
        if want != current:
            self.changed_at_s[name] = now_s
            window.clear()
        return want

    def forget(self, name: str) -> None:
        """Drop a deleted service's state."""
        self.samples.pop(name, None)
        self.changed_at_s.pop(name, None)
