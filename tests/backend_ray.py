"""Contract fixture for the Ray backend: a real local Ray head (helper module, not tests).

``ray_address()`` gives the Jobs API URL of a Ray cluster: ``$COMPUTENET_TEST_RAY_ADDRESS``
when set, otherwise a throwaway head that ``scripts/ray-up.sh`` starts once per process
in a fresh temporary directory on a free port, with two logical GPUs, and that
``scripts/ray-down.sh`` stops at exit. Without Ray the contract tests skip locally and
fail under ``CI=true``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from backend_testing import BackendUnderTest, unavailable
from computenet.gateway.backends.ray import RayBackend

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_UP = REPO_ROOT / "scripts" / "ray-up.sh"
RAY_DOWN = REPO_ROOT / "scripts" / "ray-down.sh"
ADDRESS_ENV = "COMPUTENET_TEST_RAY_ADDRESS"
NOT_AVAILABLE = 3  # ray-up.sh's exit status when Ray cannot be had here
LABEL = "ray"
POOL_CPI = f"cn/ray/{LABEL}"

_lock = threading.Lock()
_started = False
_address: str | None = None
_reason = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(directory: str) -> None:
    subprocess.run(
        ["bash", str(RAY_DOWN), directory], capture_output=True, timeout=120, check=False
    )
    shutil.rmtree(directory, ignore_errors=True)


def _start_head() -> tuple[str | None, str]:
    env = {**os.environ, "COMPUTENET_RAY_NUM_GPUS": "2"}
    last_error = ""
    for _ in range(3):  # a free port can be taken before Ray binds it: retry
        directory = tempfile.mkdtemp(prefix="cn-ray-")  # short: Ray's socket paths
        try:
            proc = subprocess.run(
                ["bash", str(RAY_UP), directory, str(_free_port())],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                check=False,
            )
        except BaseException:
            _stop(directory)
            raise
        if proc.returncode == 0:
            atexit.register(_stop, directory)
            line = proc.stdout.strip().splitlines()[-1]
            return line.removeprefix("RAY_ADDRESS="), ""
        _stop(directory)
        if proc.returncode == NOT_AVAILABLE:
            lines = proc.stderr.strip().splitlines() or ["scripts/ray-up.sh exited 3"]
            return None, lines[-1].removeprefix("ray-up.sh: ")
        last_error = f"scripts/ray-up.sh exited {proc.returncode}:\n{proc.stderr}"
        if "in use" not in proc.stderr:
            break
    raise RuntimeError(f"could not start a test Ray head: {last_error}")


def ray_address() -> str | None:
    """URL of a running Ray Jobs API, or None when Ray cannot be had here."""
    global _started, _address, _reason
    with _lock:
        if not _started:
            _address, _reason = os.environ.get(ADDRESS_ENV) or None, ""
            if _address is None:
                _address, _reason = _start_head()
            _started = True
        return _address


def require_ray() -> str:
    """The Jobs API URL; skips the test without Ray, or fails it under CI=true."""
    address = ray_address()
    if address is None:
        unavailable(_reason or "Ray not available")
    return address


@contextlib.contextmanager
def backend_under_test(tmp_path: Path) -> Iterator[BackendUnderTest]:
    """A Ray backend on the test head; its one pool has the head's logical GPUs."""
    address = require_ray()
    backend = RayBackend(tmp_path / "ray-gateway", address=address, label=LABEL)
    try:
        pool = backend.pools()[0]
        gpu_cpi = POOL_CPI if pool.accelerator is not None else None
        local = urlsplit(address).hostname in ("127.0.0.1", "localhost", "::1")
        yield BackendUnderTest(backend, POOL_CPI, gpu_cpi, processes_visible=local)
    finally:
        backend.close()
