"""Contract fixture for the local backend: this host, with two logical GPUs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from backend_testing import BackendUnderTest
from computenet.gateway.backends.local import LocalBackend
from computenet.model.pool import Accelerator, PoolSpec

HOST = PoolSpec(label="host", cpu_cores=2, memory_mib=4096)
GPU = PoolSpec(
    label="gpu",
    cpu_cores=2,
    memory_mib=4096,
    accelerator=Accelerator(vendor="nvidia", model="nvidia-t4", memory_mib=15360, count=2),
)


@contextlib.contextmanager
def backend_under_test(tmp_path: Path) -> Iterator[BackendUnderTest]:
    """A local backend whose GPU pool hands out device indices 0 and 1."""
    backend = LocalBackend(tmp_path, [HOST, GPU], {"gpu": [0, 1]})
    yield BackendUnderTest(backend, "cn/local/host", "cn/local/gpu", processes_visible=True)
