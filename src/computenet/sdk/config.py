"""Where clients find the node and their token: flags, then environment, then a config file.

``computenet up`` writes the config file on first start, so the CLI works in another shell
with no flags. The file is readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_dir

DEFAULT_URL = "http://127.0.0.1:8750"


def config_path() -> Path:
    """The client config file (``COMPUTENET_CONFIG`` overrides the default location)."""
    env = os.environ.get("COMPUTENET_CONFIG")
    return Path(env) if env else Path(user_config_dir("computenet")) / "client.json"


@dataclass(frozen=True)
class ClientConfig:
    """A node URL and a bearer token."""

    url: str
    token: str | None

    def save(self, path: Path | None = None) -> Path:
        """Write the config with owner-only permissions; return its path."""
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "token": self.token}, f, indent=2)
        os.replace(tmp, path)
        return path


def load_config(url: str | None = None, token: str | None = None) -> ClientConfig:
    """Resolve URL and token: explicit values, then COMPUTENET_URL/TOKEN, then the file."""
    saved: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(config_path().read_text())
    return ClientConfig(
        url=(url or os.environ.get("COMPUTENET_URL") or saved.get("url") or DEFAULT_URL),
        token=token or os.environ.get("COMPUTENET_TOKEN") or saved.get("token"),
    )
