"""Federation commands for operators: issue a child node's enrolment token."""

from __future__ import annotations

from typing import Annotated

import typer

from computenet.cli.output import console, fail, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.sdk.client import Client


def register(app: typer.Typer) -> None:
    """Add the federation commands to the CLI."""

    @app.command("child-token")
    def child_token(
        label: Annotated[str, typer.Argument(help="the child's label: its code is <ours>.<label>")],
        level: Annotated[str, typer.Option(help="regional or industry")] = "regional",
        ttl_s: Annotated[float, typer.Option(min=1.0, help="token lifetime")] = 7 * 24 * 3600.0,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Issue a one-time enrolment token for a child node of this node (admin)."""
        if level not in ("regional", "industry"):
            fail(f"--level must be regional or industry, got {level!r}", 2)
        with Client(url, token) as client:
            out = client.child_token(label, level, ttl_s)
        if json_out:
            print_json(out)
            return
        console.print(f"child node code: {out['code']}", highlight=False)
        console.print(
            f"start it with: computenet node --level {level} --parent {client.url} "
            f"--enrol-token {out['enrol_token']}",
            highlight=False,
        )
