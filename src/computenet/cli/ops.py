"""Operator commands: ``audit`` and ``token create|list|revoke``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from computenet.cli.output import console, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.sdk.client import Client

_PAGE = 1000


def register(app: typer.Typer) -> None:
    """Add the operator commands to ``app``."""
    app.add_typer(token_app, name="token")

    @app.command()
    def audit(
        since: Annotated[
            str | None, typer.Option(help="ISO 8601 time, e.g. 2026-11-21T00:00Z")
        ] = None,
        until: Annotated[str | None, typer.Option(help="ISO 8601 time (exclusive)")] = None,
        actor: Annotated[str | None, typer.Option(help="kind:subject, e.g. user:alice")] = None,
        path_prefix: Annotated[str | None, typer.Option(help="e.g. /api/v1/tasks")] = None,
        limit: Annotated[int, typer.Option(min=1, help="most rows to show")] = 100,
        oldest_first: Annotated[
            bool, typer.Option("--oldest-first", help="from the oldest row [default: newest]")
        ] = False,
        json_out: Json = False,
        jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON lines, for export")] = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """The node's audit log, newest first: who changed what, when, from where (admin)."""
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
        if not oldest_first:
            filters["order"] = "desc"
        cursor = "next_after_id" if oldest_first else "next_before_id"
        rows: list[dict[str, object]] = []
        after = 0
        with Client(url, token) as client:
            while len(rows) < limit:
                page = client.audit(after_id=after, limit=min(_PAGE, limit - len(rows)), **filters)
                rows.extend(page["events"])
                if page[cursor] is None:
                    break
                if oldest_first:
                    after = int(page[cursor])
                else:
                    filters["before_id"] = str(page[cursor])
        if json_out:
            print_json({"events": rows})
            return
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


token_app = typer.Typer(help="Mint, list and revoke API tokens (operators).", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Argument(help="user, provider, operator or admin")],
    subject: Annotated[str, typer.Argument(help="user name, or provider prefix for provider")],
    tenant: Annotated[str | None, typer.Option(help="organisation")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="read, write, admin (repeat)")] = None,
    ttl_s: Annotated[float | None, typer.Option(min=1.0, help="lifetime [default: none]")] = None,
    name: Annotated[str | None, typer.Option(help="label, e.g. 'ci bot'")] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Mint a token; its secret is printed this once."""
    fields = {"tenant": tenant, "scopes": scope, "ttl_s": ttl_s, "name": name}
    with Client(url, token) as client:
        out = client.mint_token(role, subject, **{k: v for k, v in fields.items() if v})
    if json_out:
        print_json(out)
        return
    console.print(
        f"{out['role']} token {out['id']} for {out['subject']} "
        f"(scopes {', '.join(out['scopes'])}); shown once:",
        highlight=False,
    )
    print(out["token"])


@token_app.command("list")
def token_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Every token's record (no secrets)."""
    with Client(url, token) as client:
        rows = client.tokens()
    if json_out:
        print_json(rows)
        return
    table = Table("id", "role", "subject", "tenant", "scopes", "expires", "revoked")
    for r in rows:
        table.add_row(
            r["id"],
            r["role"],
            r["subject"],
            r.get("tenant") or "-",
            ",".join(r["scopes"]),
            str(r.get("expires_at") or "-")[:19],
            str(r.get("revoked_at") or "-")[:19],
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, url: Url = None, token: Token = None) -> None:
    """Revoke a token (at once on this replica; within 5 s on others)."""
    with Client(url, token) as client:
        out = client.revoke_token(token_id)
    console.print(f"token {out['id']} revoked at {out['revoked_at']}", highlight=False)
