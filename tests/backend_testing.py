"""What each ``tests/backend_<name>.py`` fixture module yields to the backend contract suite."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

import pytest

from computenet.gateway.backends.base import Backend


@dataclass
class BackendUnderTest:
    """A backend ready for the contract suite, and what the suite may check about it."""

    backend: Backend
    pool_cpi: str  # a CPI whose last part is the label of one of backend.pools()
    gpu_pool_cpi: str | None = None  # a pool with accelerators, when the backend has one
    processes_visible: bool = True  # the job's processes run on this machine (check /proc)


def unavailable(what: str) -> NoReturn:
    """A real component (a backend, Snakemake) cannot be had: skip locally, fail in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: real components must run in CI)")
    pytest.skip(what)
