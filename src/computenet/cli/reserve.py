"""``computenet reserve create|list|cancel``: advance reservations of cards for a window."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from computenet.cli.output import console, fail, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.sdk.client import Client

reserve_app = typer.Typer(
    help="Advance reservations: N cards of a model for a time window, billed for the window.",
    no_args_is_help=True,
)
_SPAN = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> int:
    """'90s', '30m', '2h', '1d' -> seconds."""
    m = _SPAN.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        fail(f"a duration is a positive number with s, m, h or d (e.g. 2h), not {text!r}")
    return int(m.group(1)) * _SECONDS[m.group(2)]


def parse_start(text: str, now: datetime | None = None) -> datetime:
    """'now', '+30m' (from now), or an ISO 8601 time; without a zone, local time."""
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    if text.startswith("+"):
        return now + timedelta(seconds=parse_span(text[1:]))
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--start is 'now', '+30m' or an ISO 8601 time, not {text!r}")
    return at if at.tzinfo is not None else at.astimezone()


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("id", "tenant", "pool", "cards", "starts (UTC)", "ends (UTC)", "state", "cost")
    for r in rows:
        table.add_row(
            r["id"],
            r["tenant"],
            r["pool"],
            f"{r['cards']} x {r['model']}",
            str(r["starts_at"])[:19],
            str(r["ends_at"])[:19],
            r["state"],
            f"{r['cost']} {r['currency']}",
        )
    return table


@reserve_app.command("create")
def create(
    model: Annotated[str, typer.Argument(help="accelerator model or family, e.g. A100")],
    cards: Annotated[int, typer.Option(help="how many cards")] = 1,
    start: Annotated[str, typer.Option(help="'now', '+30m' or an ISO 8601 time")] = "now",
    duration: Annotated[str, typer.Option(help="window length: 90m, 2h, 1d")] = "1h",
    region: Annotated[str | None, typer.Option(help="GB/T 2260 code, e.g. 31")] = None,
    pool: Annotated[str | None, typer.Option(help="reserve on this pool")] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Reserve cards for a window; the window's cost is held against your budget and charged
    when it ends. Inside it, your tasks whose time limit ends in the window run on the cards."""
    fields = {k: v for k, v in {"region": region, "pool": pool}.items() if v is not None}
    with Client(url, token) as client:
        out = client.reserve(model, cards, parse_start(start), parse_span(duration), **fields)
    if json_out:
        print_json(out)
        return
    console.print(
        f"{out['id']}: {out['cards']} x {out['model']} on {out['pool']}, "
        f"{str(out['starts_at'])[:19]} to {str(out['ends_at'])[:19]} UTC, "
        f"{out['cost']} {out['currency']} ({out['unit_price']} per card-hour)",
        highlight=False,
    )


@reserve_app.command("list")
def listing(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Your reservations (operators: everyone's), newest first."""
    with Client(url, token) as client:
        rows = client.reservations()
    if json_out:
        print_json(rows)
        return
    console.print(_table(rows))


@reserve_app.command("cancel")
def cancel(reservation_id: str, url: Url = None, token: Token = None) -> None:
    """Cancel: free before the window starts; during it, charged for the time held."""
    with Client(url, token) as client:
        out = client.cancel_reservation(reservation_id)
    console.print(f"{out['id']}: {out['state']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``computenet reserve`` to ``app``."""
    app.add_typer(reserve_app, name="reserve")
