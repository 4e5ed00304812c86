"""``computenet secret set|list|delete``: secrets tasks name, stored encrypted on the node."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from computenet.cli.output import console, fail, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.sdk.client import Client

secret_app = typer.Typer(
    help="Secrets that tasks name (values are stored encrypted and never shown).",
    no_args_is_help=True,
)


@secret_app.command("set")
def secret_set(
    name: str,
    from_env: Annotated[
        str | None, typer.Option(help="take the value from this environment variable")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Store a secret; the value comes from --from-env or standard input, never an argument
    (arguments show in process lists and shell history)."""
    import os

    if from_env is not None:
        value = os.environ.get(from_env)
        if value is None:
            fail(f"environment variable {from_env} is not set")
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        fail("empty secret value")
    with Client(url, token) as client:
        out = client.put_secret(name, value)
    console.print(f"secret {out['name']} stored ({out['updated_at']})", highlight=False)


@secret_app.command("list")
def secret_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Your secrets' names."""
    with Client(url, token) as client:
        rows = client.secrets()
    if json_out:
        print_json(rows)
        return
    table = Table("name", "updated")
    for r in rows:
        table.add_row(r["name"], str(r["updated_at"])[:19])
    console.print(table)


@secret_app.command("delete")
def secret_delete(name: str, url: Url = None, token: Token = None) -> None:
    """Forget a secret (tasks that name it and have not started will fail)."""
    with Client(url, token) as client:
        client.delete_secret(name)
    console.print(f"secret {name} deleted", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``computenet secret`` to ``app``."""
    app.add_typer(secret_app, name="secret")
