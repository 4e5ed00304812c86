"""``computenet demo`` starts four federated nodes with gateways and stops them all."""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path

from nodeproc import CLI, pids_matching, spawn


def _free_run(n: int) -> int:
    """A first port of ``n`` consecutive free ones, below Linux's ephemeral range (32768 up),
    so that no outgoing connection of another test takes one meanwhile."""
    for _ in range(100):
        base = random.randrange(20000, 32000, 10)
        try:
            for port in range(base, base + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports found")


def test_demo_starts_four_nodes_and_stops_them(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    base = _free_run(4)
    proc = spawn(
        [*CLI, "demo", "--data-dir", str(data), "--base-port", str(base)], tmp_path / "out"
    )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in proc.output():
            assert proc.popen.poll() is None, proc.output()
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.2)
        out = proc.output()
        for code in ("cn ", "cn.31 ", "cn.52 ", "cn.31.ai "):
            assert f" {code}" in out, out
        assert "computenet submit --region 52" in out
        assert len(pids_matching(str(data))) >= 4
    finally:
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(timeout=60)
    deadline = time.monotonic() + 30
    while pids_matching(f"{data}/") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_matching(f"{data}/") == []
