"""Rewrite the ``inputs:`` section at the end of service.yaml from the files beside it.

    .venv/bin/python examples/services/tinylm/bundle.py

A replica runs in a sandbox on some provider's machine, so the service file carries the server
and its training text inline (``content``). Edit server.py, tinylm.py or corpus.txt, then run
this; tests/examples/test_tinylm.py fails while service.yaml is out of date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SERVICE_FILE = HERE / "service.yaml"
SHIPPED = ("server.py", "tinylm.py", "corpus.txt")
MARKER = "inputs:\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the files stay readable in the service file."""


def _text(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def bundled(service_text: str) -> str:
    """``service_text`` with everything from its top-level ``inputs:`` line on replaced by the
    shipped files' current content."""
    head, found, _ = service_text.partition("\n" + MARKER)
    if not found:
        raise SystemExit(f"{SERVICE_FILE.name} has no top-level '{MARKER.strip()}' section")
    inputs = [{"path": name, "content": (HERE / name).read_text()} for name in SHIPPED]
    body = yaml.dump({"inputs": inputs}, Dumper=_Dumper, sort_keys=False, width=1000)
    return head + "\n" + body


if __name__ == "__main__":
    SERVICE_FILE.write_text(bundled(SERVICE_FILE.read_text()))
    print(f"wrote {SERVICE_FILE}")
