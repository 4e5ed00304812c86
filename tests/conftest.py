"""Shared fixtures. ``tests/`` is put on sys.path so helper modules (``pg``, ``nodeproc``)
import without packages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests run as root in CI, and most of them check what a task did through files in their own
# temporary directories, which an unprivileged task user cannot reach. So the gateways they
# start keep tasks as root; tests/gateway/test_sandbox.py runs the default (an unprivileged
# user) on purpose.
os.environ.setdefault("COMPUTENET_RUN_AS", "root")
# Their TES tasks name images (alpine) that no registry here can give: the host runs them.
# tests/security/ declares podman on purpose and runs a locally built image in it.
os.environ.setdefault("COMPUTENET_CONTAINER_RUNTIMES", "")
