"""Billing commands: ``prices``, ``budget``, ``invoice``, ``earnings``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from computenet.cli.output import console, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.sdk.client import Client

Period = Annotated[str | None, typer.Option(help="month YYYY-MM [default: this month, UTC]")]
Csv = Annotated[bool, typer.Option("--csv", help="print CSV")]


def _this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _show_statement(st: dict[str, Any]) -> None:
    table = Table("pool", "tier", "unit", "unit price", "attempts", "quantity", "amount")
    for ln in st["lines"]:
        table.add_row(
            ln["pool"],
            ln["tier"],
            ln["unit"],
            f"{ln['unit_price']} {ln['currency']}",
            str(ln["attempts"]),
            ln["quantity"],
            ln["amount"],
        )
    console.print(f"{st['kind']} for {st['party']}, {st['period']}", highlight=False)
    console.print(table)
    for currency, total in st["totals"].items():
        console.print(f"total: {total} {currency}", highlight=False)
    # Requests the tenant's services served (not priced: the replicas' time is billed above,
    # including running replicas' card-hours to date).
    for served in st.get("requests", []):
        console.print(
            f"service {served['service']}: {served['requests']} requests", highlight=False
        )


def register(app: typer.Typer) -> None:
    """Add the billing commands to ``app``."""

    @app.command()
    def prices(
        set_scope: Annotated[
            str | None, typer.Option("--set", help="add a price for this pool, provider or *")
        ] = None,
        price: Annotated[str | None, typer.Option(help="with --set: the price")] = None,
        unit: Annotated[
            str, typer.Option(help="card_hour, core_hour or pflops_hour")
        ] = "card_hour",
        tier: Annotated[str, typer.Option(help="on_demand, spot or reserved")] = "on_demand",
        currency: Annotated[str, typer.Option()] = "CNY",
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """The price book; with --set and --price, add an entry from now on (operators)."""
        with Client(url, token) as client:
            if set_scope is not None:
                if price is None:
                    raise typer.BadParameter("--set needs --price")
                fields = {"unit": unit, "tier": tier, "currency": currency}
                client.add_price(set_scope, price, **fields)
            rows = client.prices()
        if json_out:
            print_json(rows)
            return
        table = Table("id", "scope", "tier", "unit", "price", "from")
        for r in rows:
            table.add_row(
                str(r["id"]),
                r["scope"],
                r["tier"],
                r["unit"],
                f"{r['price']} {r['currency']}",
                str(r["effective_from"])[:19],
            )
        console.print(table)
        console.print("Pools without a book price charge their own offer (computenet pools).")

    @app.command()
    def budget(
        tenant: str,
        limit: Annotated[str | None, typer.Option(help="set the monthly limit (operators)")] = None,
        warn_at: Annotated[str, typer.Option(help="warn past this fraction")] = "0.8",
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """A tenant's monthly budget: limit, spent, held by unfinished tasks, left."""
        with Client(url, token) as client:
            out = (
                client.set_budget(tenant, limit, warn_fraction=warn_at)
                if limit is not None
                else client.budget(tenant)
            )
        if json_out:
            print_json(out)
            return
        flag = "  (past the warning threshold)" if out["warning"] else ""
        console.print(
            f"{out['tenant']} {out['period']}: limit {out['monthly_limit']} {out['currency']}, "
            f"spent {out['spent']}, held {out['held']}, left {out['left']}{flag}",
            highlight=False,
        )

    for name, kind, party, doc in (
        ("invoice", "invoices", "TENANT", "A tenant's invoice for a month."),
        ("earnings", "earnings", "PROVIDER", "A provider's earnings for a month (its prefix)."),
    ):
        app.command(name, help=doc)(_statement_command(kind, party))

    @app.command()
    def settle(
        peer: Annotated[str, typer.Argument(help="the other node's code, e.g. cn.52")],
        period: Period = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Reconcile what this node and another owe each other for forwarded work (operators).

        Shows both sides' statements, their net, and every difference."""
        with Client(url, token) as client:
            out = client.settlement(peer, period or _this_month())
        if json_out:
            print_json(out)
        else:
            mine, theirs = out["mine"], out["theirs"]
            for who, st in (("ours", mine), ("theirs", theirs)):
                totals = st["totals"]
                console.print(
                    f"{who:>6} ({st['node']}): owes {totals['owed_to_peer'] or 0}, "
                    f"is owed {totals['owed_by_peer'] or 0}, net {totals['net'] or 0}",
                    highlight=False,
                )
            for problem in out["mismatches"]:
                console.print(f"mismatch: {problem}", highlight=False)
            console.print("statements agree" if out["agree"] else "statements DISAGREE")
        if not out["agree"]:
            raise typer.Exit(1)


def _statement_command(kind: str, party_name: str) -> Any:
    # The argument is a default value, not an annotation: annotations are evaluated later,
    # outside this closure.
    def command(
        party: str = typer.Argument(..., metavar=party_name),
        period: Period = None,
        csv: Csv = False,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        _statement(kind, party, period, csv, json_out, url, token)

    return command


def _statement(
    kind: str,
    party: str,
    period: str | None,
    csv: bool,
    json_out: bool,
    url: str | None,
    token: str | None,
) -> None:
    with Client(url, token) as client:
        out = client.statement(kind, party, period or _this_month(), "csv" if csv else "json")
    if csv:
        print(out, end="")
    elif json_out:
        print_json(out)
    else:
        _show_statement(out)
