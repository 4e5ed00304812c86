"""Two node replicas on one real PostgreSQL: kill -9 the scheduler leader under submit load.

The standby takes the advisory lock and schedules from then on. Submissions go to both
replicas in turn, each with an idempotency key, and a client that finds its replica dead sends
the same request to the other one (what a load balancer in front of the replicas would do).
Every task appends its number to a shared file, so the file shows how often each one ran.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from nodeproc import Proc, admin_token, free_port, start_gateway, start_node, task_states
from pg import fresh_database, require_postgres

pytestmark = pytest.mark.slow
N_TASKS = 120
SUBMIT_INTERVAL_S = 0.05  # a steady 20 submissions a second
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def _is_leader(url: str, token: str) -> bool:
    resp = httpx.get(f"{url}/api/v1/node", headers={"Authorization": f"Bearer {token}"}, timeout=2)
    return bool(resp.json()["scheduler_leader"])


def _wait_leader(url: str, token: str, timeout_s: float) -> float:
    """Seconds until the replica at ``url`` says it leads."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            if _is_leader(url, token):
                return time.monotonic() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not become the leader in {timeout_s} s")


class _Submitter(threading.Thread):
    """Submits N_TASKS tasks at a steady rate, alternating replicas, failing over on errors."""

    def __init__(self, urls: list[str], token: str, side_effects: Path) -> None:
        super().__init__(daemon=True)
        self.urls, self.token, self.side_effects = urls, token, side_effects
        self.ids: list[str] = []
        self.failovers = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=10) as http:
            for i in range(N_TASKS):
                spec = {
                    "name": f"ha-{i}",
                    "executors": [{"command": ["sh", "-c", f"echo {i} >> {self.side_effects}"]}],
                }
                self.ids.append(self._submit(http, i, spec))
                time.sleep(SUBMIT_INTERVAL_S)

    def _submit(self, http: httpx.Client, i: int, spec: dict[str, object]) -> str:
        for attempt in range(6):
            url = self.urls[(i + attempt) % len(self.urls)]
            try:
                resp = http.post(
                    f"{url}/api/v1/tasks", json=spec, headers={"Idempotency-Key": f"ha-{i}"}
                )
            except httpx.TransportError:
                self.failovers += 1
                continue
            if resp.status_code in (200, 201):
                return str(resp.json()["id"])
            raise AssertionError(f"submit {i} refused: {resp.status_code} {resp.text}")
        raise AssertionError(f"submit {i} failed on every replica")


def test_standby_takes_over_when_the_leader_is_killed(tmp_path: Path) -> None:
    db_url = fresh_database(require_postgres())
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs: list[Proc] = []
    a = start_node(tmp_path / "a", ports[0], "--db-url", db_url)
    procs.append(a)
    token = admin_token(a)
    try:
        _wait_leader(urls[0], token, timeout_s=10)
        b = start_node(tmp_path / "b", ports[1], "--db-url", db_url)
        procs.append(b)
        assert not _is_leader(urls[1], token), "two leaders at once"
        # The gateway talks to the replica that survives; in production it would go
        # through the load balancer in front of both.
        procs.append(start_gateway(urls[1], token, tmp_path / "gw", "ha", cpus=4))
        side_effects = tmp_path / "ran.txt"
        submitter = _Submitter(urls, token, side_effects)
        submitter.start()
        deadline = time.monotonic() + 60
        while len(submitter.ids) < N_TASKS // 3:
            assert time.monotonic() < deadline and submitter.is_alive(), "submissions stalled"
            time.sleep(0.05)

        a.kill9()
        takeover_s = _wait_leader(urls[1], token, timeout_s=30)
        print(f"\ntakeover after kill -9 of the leader: {takeover_s:.3f} s")
        submitter.join(timeout=120)
        assert not submitter.is_alive()
        assert len(set(submitter.ids)) == N_TASKS

        deadline = time.monotonic() + 180
        while True:
            states = task_states(urls[1], token, submitter.ids)
            if all(s in TERMINAL for s in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert Counter(states.values()) == {"COMPLETE": N_TASKS}, Counter(states.values())
        runs = Counter(side_effects.read_text().split())
        assert len(runs) == N_TASKS, f"{N_TASKS - len(runs)} tasks never ran"
        doubled = {k: v for k, v in runs.items() if v > 1}
        assert not doubled, f"tasks ran more than once: {doubled}"
        assert submitter.failovers > 0, "no submission met the dead replica: the kill was too late"
    finally:
        for proc in reversed(procs):
            proc.stop()
