"""Waiting in tests for something that happens in the background (helper module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Call ``check`` until it returns something true and return that; fail the test with
    ``what`` when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
