"""Autoscaling decisions in virtual time: an injected clock, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from computenet.model.service import ReplicaPolicy
from computenet.node.services.autoscale import Autoscaler, Sample, decide


@dataclass
class Load:
    in_flight: int
    requests_per_s: float = 0.0
    tokens_per_s: float | None = None
    per_replica: dict[str, int] = field(default_factory=dict)


POLICY = ReplicaPolicy(min=1, max=4, target_inflight=4, scale_up_window_s=10, scale_down_delay_s=60)


def run(scaler: Autoscaler, policy: ReplicaPolicy, n: int, loads: list[int], t0: float) -> int:
    """Feed one sample a second from ``t0``; return the size after the last step."""
    for i, inflight in enumerate(loads):
        now = t0 + i
        scaler.observe("s", Load(inflight), now)
        n = scaler.step("s", policy, n, now)
    return n


def test_steady_load_on_target_keeps_the_size() -> None:
    assert run(Autoscaler(), POLICY, 2, [8] * 300, 0.0) == 2


def test_load_above_target_for_the_window_scales_up_in_proportion() -> None:
    scaler = Autoscaler()
    # 1 replica, 12 in flight = 3x target: not before the window is full...
    assert run(scaler, POLICY, 1, [12] * 10, 0.0) == 1
    # ...then straight to 3 (ceil of 1 x 3), not one at a time.
    assert run(scaler, POLICY, 1, [12] * 2, 10.0) == 3


def test_a_short_burst_does_not_scale() -> None:
    loads = ([50] * 5 + [1] * 5) * 20
    assert run(Autoscaler(), POLICY, 1, loads, 0.0) == 1


def test_never_above_max() -> None:
    assert run(Autoscaler(), POLICY, 1, [1000] * 40, 0.0) == 4


def test_quiet_scales_down_one_at_a_time_after_the_delay_and_never_below_min() -> None:
    scaler = Autoscaler()
    n = run(scaler, POLICY, 4, [1] * 60, 0.0)
    assert n == 4  # the delay is not yet over
    n = run(scaler, POLICY, n, [1] * 2, 60.0)
    assert n == 3
    # Each further step waits a whole new delay.
    n = run(scaler, POLICY, n, [1] * 59, 62.0)
    assert n == 3
    n = run(scaler, POLICY, n, [0] * 1000, 121.0)
    assert n == 1


def test_hysteresis_band_holds_the_size() -> None:
    # 2 replicas at 70 % of target: below the up threshold, above the down one.
    assert run(Autoscaler(), POLICY, 2, [6] * 500, 0.0) == 2


def test_scale_to_zero_and_wake_on_demand() -> None:
    policy = ReplicaPolicy(min=0, max=2, scale_to_zero=True, scale_down_delay_s=30)
    scaler = Autoscaler()
    n = run(scaler, policy, 1, [0] * 32, 0.0)
    assert n == 0
    # The first request wakes it at once.
    assert run(scaler, policy, n, [0, 0, 1], 40.0) == 1


def test_no_scale_to_zero_without_the_flag() -> None:
    assert run(Autoscaler(), POLICY, 1, [0] * 500, 0.0) == 1


def test_out_of_bounds_after_a_scale_command_is_clamped_at_once() -> None:
    assert decide([], POLICY, 9, 0.0, 0.0) == 4
    assert decide([], POLICY.model_copy(update={"min": 3}), 1, 0.0, 0.0) == 3


def test_tokens_target_counts_when_the_server_reports_tokens() -> None:
    policy = POLICY.model_copy(update={"target_tokens_per_s": 100.0})
    samples = [Sample(float(i), 1, 0.0, 500.0) for i in range(12)]
    # In flight is low, but 500 tokens/s on one replica is 5x target.
    assert decide(samples, policy, 1, 11.0, 0.0) == 4
