"""Operator commands: ``audit``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from computenet.cli.output import console
from computenet.cli.tasks import Token, Url
from computenet.sdk.client import Client

_PAGE = 1000


def register(app: typer.Typer) -> None:
    """Add the operator commands to ``app``."""

    @app.command()
    def audit(
        since: Annotated[
            str | None, typer.Option(help="ISO 8601 time, e.g. 2026-11-21T00:00Z")
        ] = None,
        until: Annotated[str | None, typer.Option(help="ISO 8601 time (exclusive)")] = None,
        actor: Annotated[str | None, typer.Option(help="kind:subject, e.g. user:alice")] = None,
        path_prefix: Annotated[str | None, typer.Option(help="e.g. /api/v1/tasks")] = None,
        limit: Annotated[int, typer.Option(min=1, help="most rows to show")] = 100,
        jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON lines, for export")] = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """The node's audit log: who changed what, when, from where (admin)."""
        filters = {
            k: v
            for k, v in (
                ("since", since),
                ("until", until),
                ("actor", actor),
                ("path_prefix", path_prefix),
            )
            if v is not None
        }
        rows: list[dict[str, object]] = []
        after = 0
        with Client(url, token) as client:
            while len(rows) < limit:
                page = client.audit(after_id=after, limit=min(_PAGE, limit - len(rows)), **filters)
                rows.extend(page["events"])
                if page["next_after_id"] is None:
                    break
                after = int(page["next_after_id"])
        if jsonl:
            for row in rows:
                print(json.dumps(row, separators=(",", ":")))
            return
        table = Table("id", "at", "actor", "call", "status", "from")
        for r in rows:
            table.add_row(
                str(r["id"]),
                str(r["at"])[:23],
                str(r["actor"]),
                f"{r['method']} {r['path']}",
                str(r["status"]),
                str(r["client"]),
            )
        console.print(table)
