"""Contract fixture for the Slurm backend: a real single-node Slurm (helper module, not tests).

``slurm_conf()`` gives the slurm.conf of a running cluster: ``$COMPUTENET_TEST_SLURM_CONF``
when set, otherwise a throwaway cluster that ``scripts/slurm-up.sh`` starts once per process
in a fresh temporary directory (partition ``debug``, two fake GPUs), and that
``scripts/slurm-down.sh`` stops at exit. With ``COMPUTENET_INSTALL_SLURM=1`` (as root on
Debian) the script installs Slurm first. Without Slurm the tests skip locally and fail
under ``CI=true``.
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

from backend_testing import BackendUnderTest, unavailable
from computenet.gateway.backends.slurm import SlurmBackend

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_UP = REPO_ROOT / "scripts" / "slurm-up.sh"
SLURM_DOWN = REPO_ROOT / "scripts" / "slurm-down.sh"
CONF_ENV = "COMPUTENET_TEST_SLURM_CONF"
NOT_AVAILABLE = 3  # slurm-up.sh's exit status when Slurm cannot be had here
PARTITION = "debug"
POOL_CPI = f"cn/slurm/{PARTITION}"

_lock = threading.Lock()
_started = False
_conf: Path | None = None
_reason = ""


def _free_port_pair() -> int:
    """A port P with P and P+1 free on loopback right now (slurmctld, slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535:
            with socket.socket() as s2, contextlib.suppress(OSError):
                s2.bind(("127.0.0.1", port + 1))
                return port
    raise RuntimeError("no free pair of ports")


def _stop(directory: str) -> None:
    subprocess.run(
        ["bash", str(SLURM_DOWN), directory], capture_output=True, timeout=120, check=False
    )
    shutil.rmtree(directory, ignore_errors=True)


def _start_cluster() -> tuple[Path | None, str]:
    last_error = ""
    for _ in range(3):  # a free port can be taken before slurmctld binds it: retry
        directory = tempfile.mkdtemp(prefix="cn-slurm-")  # short: munge's socket path
        try:
            proc = subprocess.run(
                ["bash", str(SLURM_UP), directory, str(_free_port_pair())],
                capture_output=True,
                text=True,
                timeout=900,  # COMPUTENET_INSTALL_SLURM=1 may run apt-get first
                check=False,
            )
        except BaseException:
            _stop(directory)
            raise
        if proc.returncode == 0:
            atexit.register(_stop, directory)
            line = proc.stdout.strip().splitlines()[-1]
            return Path(line.removeprefix("SLURM_CONF=")), ""
        _stop(directory)
        if proc.returncode == NOT_AVAILABLE:
            lines = proc.stderr.strip().splitlines() or ["scripts/slurm-up.sh exited 3"]
            return None, lines[-1].removeprefix("slurm-up.sh: ")
        last_error = f"scripts/slurm-up.sh exited {proc.returncode}:\n{proc.stderr}"
        if "in use" not in proc.stderr:
            break
    raise RuntimeError(f"could not start a test Slurm cluster: {last_error}")


def slurm_conf() -> Path | None:
    """slurm.conf of a running test cluster, or None when Slurm cannot be had here."""
    global _started, _conf, _reason
    with _lock:
        if not _started:
            env_conf = os.environ.get(CONF_ENV)
            if env_conf:
                _conf, _reason = Path(env_conf), ""
            else:
                _conf, _reason = _start_cluster()
            _started = True
        return _conf


def require_slurm() -> Path:
    """The cluster's slurm.conf; skips the test without Slurm, or fails it under CI=true."""
    conf = slurm_conf()
    if conf is None:
        unavailable(_reason or "Slurm not available")
    return conf


@contextlib.contextmanager
def backend_under_test(tmp_path: Path) -> Iterator[BackendUnderTest]:
    """A Slurm backend on the test cluster's ``debug`` partition (which has GPUs when the
    cluster was started as root)."""
    conf = require_slurm()
    backend = SlurmBackend(tmp_path / "slurm-gateway", partition=PARTITION, slurm_conf=conf)
    pool = next(p for p in backend.pools() if p.label == PARTITION)
    gpu_cpi = POOL_CPI if pool.accelerator is not None else None
    yield BackendUnderTest(backend, POOL_CPI, gpu_cpi, processes_visible=True)
