"""A replica's own health policy (from its service file, carried in its binding) is what the
gateway's tunnel applies: its interval, timeout and failure count, per replica."""

from __future__ import annotations

import asyncio
from pathlib import Path

from computenet.gateway.tunnel import HealthPolicy, ReplicaTarget, Tunnel
from computenet.model.service import ServiceSpec
from svcserve import replica


def _tunnel(targets: dict[str, ReplicaTarget]) -> Tunnel:
    return Tunnel("http://127.0.0.1:9", lambda: None, lambda: targets)


async def _close(tunnel: Tunnel) -> None:
    for client in tunnel._clients.values():
        await client.close()


def test_each_replica_is_checked_on_its_own_interval(tmp_path: Path) -> None:
    fast, slow = tmp_path / "f.sock", tmp_path / "s.sock"
    targets = {
        "t.fast": ReplicaTarget(fast, health=HealthPolicy(interval_s=0.001)),
        "t.slow": ReplicaTarget(slow, health=HealthPolicy(interval_s=3600)),
    }
    tunnel = _tunnel(targets)

    async def go() -> list[set[str]]:
        checked: list[set[str]] = []
        for _ in range(3):
            for stats in tunnel.stats.values():
                stats.check_ms = None
            await tunnel.check_once(due_only=True)
            await asyncio.sleep(0.01)
            checked.append({t for t, s in tunnel.stats.items() if s.check_ms is not None})
        await _close(tunnel)
        return checked

    with replica(fast, "f"), replica(slow, "s"):
        rounds = asyncio.run(go())
    assert rounds[0] == {"t.fast", "t.slow"}
    assert rounds[1] == rounds[2] == {"t.fast"}  # the slow one is not due for an hour


def test_failures_in_a_row_come_from_the_replicas_policy(tmp_path: Path) -> None:
    strict, lenient = tmp_path / "a.sock", tmp_path / "b.sock"
    targets = {
        "t.strict": ReplicaTarget(strict, health=HealthPolicy(failures=1, timeout_s=0.5)),
        "t.lenient": ReplicaTarget(lenient, health=HealthPolicy(failures=3, timeout_s=0.5)),
    }
    tunnel = _tunnel(targets)

    async def go() -> None:
        with replica(strict, "a"), replica(lenient, "b"):
            await tunnel.check_once()
            assert tunnel.stats["t.strict"].healthy and tunnel.stats["t.lenient"].healthy
        await tunnel.check_once()  # both servers are gone now: one failure each
        assert not tunnel.stats["t.strict"].healthy
        assert tunnel.stats["t.lenient"].healthy
        await tunnel.check_once()
        await tunnel.check_once()
        assert not tunnel.stats["t.lenient"].healthy
        await _close(tunnel)

    asyncio.run(go())


def test_the_service_files_health_settings_reach_the_replica_binding() -> None:
    spec = ServiceSpec.model_validate(
        {
            "name": "web",
            "executor": {"command": ["python3", "-m", "http.server"]},
            "health": {"path": "/ok", "interval_s": 4, "timeout_s": 2, "failures": 5},
        }
    )
    binding = spec.replica_task(0, [], "cn", default_time_limit_s=3600).service
    assert binding is not None
    assert (binding.health_path, binding.health_interval_s) == ("/ok", 4)
    assert (binding.health_timeout_s, binding.health_failures) == (2, 5)
