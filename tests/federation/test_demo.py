"""``computenet demo`` starts four federated nodes with gateways and stops them all."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from nodeproc import CLI, cli, pids_matching, spawn


def test_demo_refuses_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        base = busy.getsockname()[1]
        res = cli("demo", "--data-dir", str(tmp_path / "demo"), "--base-port", str(base))
    assert res.returncode != 0
    assert f"port {base} on 127.0.0.1 is already in use" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_demo_starts_four_nodes_and_stops_them(tmp_path: Path) -> None:
    """With no --base-port the demo takes free ports, and says which."""
    data = tmp_path / "demo"
    proc = spawn([*CLI, "demo", "--data-dir", str(data)], tmp_path / "out")
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
        ports = json.loads((data / "demo.json").read_text())["ports"]
        assert len(set(ports.values())) == 4
        assert all(f"http://127.0.0.1:{p}" in out for p in ports.values()), out
        assert len(pids_matching(str(data))) >= 4
    finally:
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(timeout=60)
    deadline = time.monotonic() + 30
    while pids_matching(f"{data}/") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_matching(f"{data}/") == []
