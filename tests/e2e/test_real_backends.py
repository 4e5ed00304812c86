"""Issue 3, end to end: real Slurm and Ray clusters behind gateways, seen and used through a node.

- `computenet pools` shows the resources the real backends report.
- Slurm failover: with tasks running on Slurm, slurmctld is killed; the gateway hands the tasks
  back and they finish on the local pool. The test prints how long failover took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend_ray import require_ray
from backend_slurm import _start_cluster, require_slurm
from backend_testing import unavailable
from nodeproc import admin_token, cli, free_port, start_gateway, start_node

pytestmark = pytest.mark.slow


def _pools(http: httpx.Client, want: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        pools = {p["cpi"]: p for p in http.get("/api/v1/pools").json()}
        if want <= set(pools):
            return pools
        assert time.monotonic() < deadline, f"pools {want - set(pools)} never appeared"
        time.sleep(0.2)


def _scontrol_node(conf: Path) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "node", "-o"],
        env={**os.environ, "SLURM_CONF": str(conf)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")[0]
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def test_pools_show_what_slurm_and_ray_report(tmp_path: Path) -> None:
    conf = require_slurm()
    address = require_ray()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port)
    token = admin_token(node)
    gateways = [
        start_gateway(
            url,
            token,
            tmp_path / "gw-slurm",
            "hpc",
            None,
            "--backend",
            "slurm",
            "--slurm-conf",
            str(conf),
        ),
        start_gateway(
            url,
            token,
            tmp_path / "gw-ray",
            "ray",
            None,
            "--backend",
            "ray",
            "--ray-address",
            address,
            "--label",
            "ray",
        ),
    ]
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            pools = _pools(http, {"cn/hpc/debug", "cn/ray/ray"})
        slurm = pools["cn/hpc/debug"]["spec"]
        real = _scontrol_node(conf)
        assert slurm["backend"] == "slurm"
        assert slurm["cpu_cores"] == int(real["CPUTot"])
        assert slurm["memory_mib"] == int(real["RealMemory"])
        assert slurm["accelerator"]["count"] == 2  # Gres=gpu:2 from scripts/slurm-up.sh
        assert "gpu:2" in real["Gres"]
        ray = pools["cn/ray/ray"]["spec"]
        assert ray["backend"] == "ray" and ray["cpu_cores"] >= 1
        # The CLI shows the same.
        listed = cli("pools", "--json", "--url", url, "--token", token)
        assert {p["cpi"] for p in json.loads(listed.stdout)["pools"]} >= {
            "cn/hpc/debug",
            "cn/ray/ray",
        }
    finally:
        for gw in gateways:
            gw.stop()
        node.stop()


def test_slurm_failover_to_the_local_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cluster of its own: this test kills its controller.
    conf, reason = _start_cluster()
    if conf is None:
        unavailable(reason or "Slurm not available")
    pidfile = next(conf.parent.parent.rglob("slurmctld.pid"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port)
    token = admin_token(node)
    slurm_gw = start_gateway(
        url,
        token,
        tmp_path / "gw-slurm",
        "hpc",
        None,
        "--backend",
        "slurm",
        "--slurm-conf",
        str(conf),
        "--failover-after-s",
        "5",
    )
    local_gw = None
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            _pools(http, {"cn/hpc/debug"})
            ids = [
                http.post(
                    "/api/v1/tasks",
                    json={
                        "name": f"fo-{i}",
                        "executors": [{"command": ["sh", "-c", f"sleep 20; echo done {i}"]}],
                    },
                ).json()["id"]
                for i in range(2)
            ]
            deadline = time.monotonic() + 60
            while not all(
                (t := http.get(f"/api/v1/tasks/{i}", params={"view": "BASIC"}).json())["state"]
                == "RUNNING"
                and t["pool"] == "cn/hpc/debug"
                for i in ids
            ):
                assert time.monotonic() < deadline, "tasks never ran on Slurm"
                time.sleep(0.2)
            local_gw = start_gateway(url, token, tmp_path / "gw-local", "local", 2)
            _pools(http, {"cn/local/host"})
            os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the controller dies
            killed = time.monotonic()
            moved: dict[str, float] = {}
            done: dict[str, float] = {}
            while len(done) < len(ids):
                assert time.monotonic() - killed < 60, "tasks did not finish within 60 s"
                for i in ids:
                    t = http.get(f"/api/v1/tasks/{i}", params={"view": "BASIC"}).json()
                    if t.get("pool") == "cn/local/host":
                        moved.setdefault(i, time.monotonic() - killed)
                    if t["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
                        done.setdefault(i, time.monotonic() - killed)
                        assert t["state"] == "COMPLETE" and t["pool"] == "cn/local/host", t
                time.sleep(0.2)
            for i in ids:
                full = http.get(f"/api/v1/tasks/{i}").json()
                assert full["attempt"] == 2
                assert any("handed back" in e["message"] for e in full["events"]), full["events"]
                assert full["attempts"][-1]["executors"][0]["stdout"].startswith("done")
        with capsys.disabled():
            print(
                f"\nslurm failover: re-placed on the local pool after "
                f"{max(moved.values()):.1f} s, all complete after {max(done.values()):.1f} s "
                "(failover_after_s=5)"
            )
    finally:
        for gw in (slurm_gw, local_gw):
            if gw is not None:
                gw.stop()
        node.stop()
