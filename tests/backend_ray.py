"""Contract fixture for the Ray backend: a real local Ray head (helper module, not tests).

``ray_address()`` gives the Jobs API URL of a Ray cluster: ``$COMPUTENET_TEST_RAY_ADDRESS``
when set, otherwise a throwaway head that ``scripts/ray-up.sh`` starts once per process
in a fresh temporary directory on a free port, with two logical GPUs, and that
``scripts/ray-down.sh`` stops at exit. Without Ray the contract tests skip locally and
fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from backend_testing import BackendUnderTest, unavailable
from computenet.gateway.backends.ray import RayBackend
from scripted_service import REPO_ROOT, Once, start_service

RAY_UP = REPO_ROOT / "scripts" / "ray-up.sh"
RAY_DOWN = REPO_ROOT / "scripts" / "ray-down.sh"
ADDRESS_ENV = "COMPUTENET_TEST_RAY_ADDRESS"
LABEL = "ray"
POOL_CPI = f"cn/ray/{LABEL}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_head() -> tuple[str | None, str]:
    """A Ray head with two logical GPUs (so the GPU contract test runs without GPUs)."""
    return start_service("ray", _free_port, timeout_s=300, env={"COMPUTENET_RAY_NUM_GPUS": "2"})


_head = Once(ADDRESS_ENV, _start_head)


def ray_address() -> str | None:
    """URL of a running Ray Jobs API, or None when Ray cannot be had here."""
    return _head.get()


def require_ray() -> str:
    """The Jobs API URL; skips the test without Ray, or fails it under CI=true."""
    address = ray_address()
    if address is None:
        unavailable(_head.reason or "Ray not available")
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
