"""Fixtures for the example service tests: tinylm servers, each its own process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinylmproc import start_tinylm


@pytest.fixture(scope="module")
def tinylm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tinylm server as fast as it goes; yields its base URL."""
    url, proc = start_tinylm(tmp_path_factory.mktemp("tinylm"))
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def slow_tinylm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tinylm server that takes 40 ms per token, as a model on a busy accelerator would."""
    url, proc = start_tinylm(tmp_path_factory.mktemp("tinylm-slow"), "--delay-ms-per-token", "40")
    yield url
    proc.stop()
