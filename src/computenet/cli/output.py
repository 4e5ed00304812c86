"""Shared CLI output: JSON for scripts, Rich tables for people, one-line errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from pydantic import BaseModel
from rich.console import Console

# Piped output is not cut to 80 columns: ids and CPIs must survive intact.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def print_json(data: Any) -> None:
    """Print a model, or plain data, as indented JSON."""
    if isinstance(data, BaseModel):
        sys.stdout.write(data.model_dump_json(indent=2, exclude_none=True) + "\n")
    elif isinstance(data, list) and data and isinstance(data[0], BaseModel):
        items = [d.model_dump(mode="json", exclude_none=True) for d in data]
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line to stderr and exit non-zero."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


STATE_STYLE = {
    "QUEUED": "yellow",
    "INITIALIZING": "cyan",
    "RUNNING": "blue",
    "COMPLETE": "green",
    "EXECUTOR_ERROR": "red",
    "SYSTEM_ERROR": "red",
    "CANCELED": "magenta",
    "CANCELING": "magenta",
    "PREEMPTED": "magenta",
}


def styled_state(state: str) -> str:
    """A state name coloured for the terminal."""
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"
