"""Start real ComputeNet processes for end-to-end tests: nodes, gateways, the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "computenet.cli.main"]
_TOKEN = re.compile(r"admin token \(shown once, stored hashed\): (\S+)")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A process started by a test, with its combined output in a log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL, as a crash would."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGINT (a clean stop), then SIGKILL if it does not exit."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a process with output going to ``log``."""
    out = log.open("ab")
    popen = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    return Proc(popen, log)


def wait_healthy(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    """Wait until the node answers /healthz; fail early if its process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s:\n{proc.output()}")


def admin_token(proc: Proc, timeout_s: float = 10.0) -> str:
    """The admin token a node prints on its first start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = _TOKEN.search(proc.output())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise TimeoutError(f"no admin token printed:\n{proc.output()}")


def start_node(
    data_dir: Path, port: int, *extra: str, up: bool = False, env: dict[str, str] | None = None
) -> Proc:
    """``computenet node`` (or ``up`` for node + local gateway) on loopback; ``env`` adds
    environment variables."""
    args = [*CLI, "up" if up else "node", "--data-dir", str(data_dir), "--port", str(port)]
    data_dir.mkdir(parents=True, exist_ok=True)
    # `up` writes a client config; keep it beside the test's data, never in the user's home.
    env = {"COMPUTENET_CONFIG": str(data_dir.parent / "client.json"), **(env or {})}
    proc = spawn([*args, *extra], data_dir.parent / f"{data_dir.name}.log", env)
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


def start_gateway(
    url: str, token: str, state_dir: Path, label: str, cpus: int | None, *extra: str
) -> Proc:
    """Enrol provider ``label`` with the admin token and start its gateway process."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        resp = http.post("/api/v1/providers", json={"label": label})
        resp.raise_for_status()
    enrol = resp.json()["enrolment_token"]
    return restart_gateway(url, state_dir, cpus, "--token", enrol, *extra)


def restart_gateway(url: str, state_dir: Path, cpus: int | None, *extra: str) -> Proc:
    """Start a gateway on ``state_dir`` (an enrolled one needs no token: it has its
    credential there); ``cpus`` None for backends that find their capacity themselves."""
    args = ["gateway", "--node", url, "--state-dir", str(state_dir)]
    if cpus is not None:
        args += ["--cpus", str(cpus)]
    log = state_dir.parent / f"{state_dir.name}.log"
    return spawn([*CLI, *args, *extra], log)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``computenet`` CLI and capture its output."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
        check=False,
    )


def pids_matching(pattern: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``pattern``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if pattern in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def task_states(url: str, token: str, ids: list[str]) -> dict[str, str]:
    """The state of each task in ``ids`` (``MISSING`` if the node does not know it), read
    page by page from the native list endpoint."""
    states: dict[str, str] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        page_token = None
        while True:
            params: dict[str, str | int] = {"view": "MINIMAL", "page_size": 500}
            if page_token:
                params["page_token"] = page_token
            page = http.get("/api/v1/tasks", params=params).json()
            states.update({t["id"]: t["state"] for t in page["tasks"]})
            page_token = page.get("next_page_token")
            if not page_token:
                return {i: states.get(i, "MISSING") for i in ids}
