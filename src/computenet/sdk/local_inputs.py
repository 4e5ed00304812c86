"""Local files sent as an input's content: ``computenet submit --input`` and a service file's
``inputs: [{path: server.py, local: server.py}]``.

A replica or task runs on some provider's machine, so what it needs from here travels inline;
these checks run before anything is sent, each failing with one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from computenet.errors import InvalidInput

MAX_INPUT_BYTES = 128 * 1024  # what a task's inline input content may hold (model.task.Input)


def read_local_text(path: Path, label: str) -> str:
    """The text of a local file an input carries inline; ``label`` names it in errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{label}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput(
            f"{label} is {len(data)} bytes, over the {MAX_INPUT_BYTES} bytes an input "
            "may carry inline: put it where the task can fetch it (inputs with a url)"
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{label} is not text: put it where the task can fetch it (inputs with a url)"
        ) from None


def _local_file(local: object, base_dir: Path, where: str) -> Path:
    """``local`` as a file under ``base_dir``: relative, and not leaving it (``..`` or a
    symbolic link pointing out), so a service file cannot send what lies beside it."""
    if not isinstance(local, str) or not local:
        raise InvalidInput(f"{where}.local: a file name relative to the service file")
    if Path(local).is_absolute():
        raise InvalidInput(f"{where}.local: {local} must be relative to the service file")
    root = base_dir.resolve()
    path = (root / local).resolve()
    if not path.is_relative_to(root):
        raise InvalidInput(f"{where}.local: {local} leaves the service file's directory")
    return path


def resolve_local_inputs(spec: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """``spec`` with each input's ``local`` file (relative to ``base_dir``) read into its
    ``content``; the input's ``path`` defaults to the file's name. Other inputs are kept."""
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or not any(
        isinstance(i, dict) and "local" in i for i in inputs
    ):
        return spec
    resolved: list[Any] = []
    for n, item in enumerate(inputs):
        if not (isinstance(item, dict) and "local" in item):
            resolved.append(item)
            continue
        where = f"inputs.{n}"
        clash = [k for k in ("content", "url") if item.get(k) is not None]
        if clash:
            raise InvalidInput(f"{where}: give local or {clash[0]}, not both")
        path = _local_file(item["local"], base_dir, where)
        rest = {k: v for k, v in item.items() if k != "local"}
        rest.setdefault("path", path.name)
        resolved.append(
            {**rest, "content": read_local_text(path, f"{where}.local {item['local']}")}
        )
    return {**spec, "inputs": resolved}
