"""Find Debian's Chromium for browser tests; install it when CI asks
(``COMPUTENET_INSTALL_CHROMIUM=1``).

Under CI=true a missing browser fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    """The Chromium executable, installing it first when allowed; fail or skip when absent."""
    found = next((p for p in CANDIDATES if Path(p).exists()), None) or shutil.which("chromium")
    if found is None and os.environ.get("COMPUTENET_INSTALL_CHROMIUM") == "1":
        subprocess.run([str(ROOT / "scripts" / "chromium-up.sh")], check=False, timeout=900)
        found = next((p for p in CANDIDATES if Path(p).exists()), None)
    if found is None:
        why = "Chromium not found (apt-get install -y chromium, or COMPUTENET_INSTALL_CHROMIUM=1)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found
