"""Contract fixture for the Slurm backend: a real single-node Slurm (helper module, not tests).

``slurm_conf()`` gives the slurm.conf of a running cluster: ``$COMPUTENET_TEST_SLURM_CONF``
when set, otherwise a throwaway cluster that ``scripts/slurm-up.sh`` starts once per process
in a fresh temporary directory (partition ``debug``, two fake GPUs), and that
``scripts/slurm-down.sh`` stops at exit. With ``COMPUTENET_INSTALL_SLURM=1`` (as root on
Debian) the script installs Slurm first. Without Slurm the tests skip locally and fail
under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from backend_testing import BackendUnderTest, unavailable
from computenet.gateway.backends.slurm import SlurmBackend
from scripted_service import Once, start_service

CONF_ENV = "COMPUTENET_TEST_SLURM_CONF"
PARTITION = "debug"
POOL_CPI = f"cn/slurm/{PARTITION}"


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


def _start(timeout_s: float = 900) -> tuple[str | None, str]:
    # COMPUTENET_INSTALL_SLURM=1 may run apt-get first: allow for it.
    return start_service("slurm", _free_port_pair, timeout_s=timeout_s)


def _start_cluster() -> tuple[Path | None, str]:
    """A new single-node test cluster of its own (stopped at exit), or None and why not."""
    conf, reason = _start()
    return (Path(conf) if conf else None), reason


_cluster = Once(CONF_ENV, _start)


def slurm_conf() -> Path | None:
    """slurm.conf of a running test cluster, or None when Slurm cannot be had here."""
    conf = _cluster.get()
    return Path(conf) if conf else None


def require_slurm() -> Path:
    """The cluster's slurm.conf; skips the test without Slurm, or fails it under CI=true."""
    conf = slurm_conf()
    if conf is None:
        unavailable(_cluster.reason or "Slurm not available")
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
