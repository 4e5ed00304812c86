"""Start the example service tinylm (examples/services/tinylm) for tests, with the system
python3 a replica runs with (standard library only), not the project's venv (helper module).
Importing it also puts the example's directory on sys.path, for tests of its modules."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from computenet.sdk.local_inputs import resolve_local_inputs
from nodeproc import Proc, free_port, spawn

TINYLM = Path(__file__).resolve().parents[1] / "examples" / "services" / "tinylm"
# What a replica runs: the host's python3 (the sandbox binds the host's /usr).
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

sys.path.insert(0, str(TINYLM))  # its modules (the model), for tests of them alone


def start_tinylm(log_dir: Path, *extra: str, timeout_s: float = 30.0) -> tuple[str, Proc]:
    """Start tinylm on a free loopback port; its base URL once /health answers."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [SYSTEM_PYTHON, str(TINYLM / "server.py"), "--port", str(port), *extra]
    proc = spawn(args, log_dir / f"tinylm-{port}.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"tinylm exited early:\n{proc.output()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            proc.stop()
            raise TimeoutError(f"tinylm not healthy after {timeout_s} s:\n{proc.output()}")
        time.sleep(0.05)


def tinylm_service() -> dict[str, Any]:
    """tinylm's service file as the SDK sends it: its ``local`` inputs read into content."""
    data = yaml.safe_load((TINYLM / "service.yaml").read_text())
    return resolve_local_inputs(data, TINYLM)
