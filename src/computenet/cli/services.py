"""``computenet service deploy|list|status|scale|logs|delete|keys``: inference services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from computenet.cli.output import console, fail, print_json, styled_state
from computenet.cli.tasks import Json, Token, Url, load_file
from computenet.cli.taskview import local_inputs
from computenet.errors import InvalidInput
from computenet.model.service import ServiceSpec
from computenet.model.service_api import ServiceOut
from computenet.sdk.client import Client
from computenet.sdk.local_inputs import resolve_local_inputs

service_app = typer.Typer(
    help="Inference services: long-running replicas of an HTTP server, behind the router.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="A service's API keys.", no_args_is_help=True)
service_app.add_typer(keys_app, name="keys")


def _service(path: Path, extra_inputs: list[str]) -> ServiceSpec:
    """The service file, its ``local`` inputs read relative to it (and ``--input`` files
    relative to here), validated with one clear line per error."""
    data = load_file(path, "service")
    try:
        data = resolve_local_inputs(data, path.parent)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    if extra_inputs:
        data = {**data, "inputs": [*data.get("inputs", []), *local_inputs(extra_inputs)]}
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "service"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{path}: {where}: {msg}") from None


@service_app.command("deploy")
def deploy(
    file: Annotated[Path, typer.Option("--file", "-f", help="service.yaml")],
    input_file: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            metavar="LOCAL[=PATH]",
            help="send a local file (text, up to 128 KiB; relative to here) to every replica, "
            "at PATH [default: its name] (repeat); a service file names its own files with "
            "`inputs: [{path: P, local: FILE}]`, FILE relative to the service file",
        ),
    ] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Deploy a service from its file, or roll it to the file's new version. Inputs with
    `local: FILE` are read from beside the service file and sent inline."""
    spec = _service(file, input_file or [])
    with Client(url, token) as client:
        out = client.service_deploy(spec.model_dump(mode="json", exclude_unset=True))
    if json_out:
        print_json(out.model_dump(mode="json"))
        return
    what = "deployed" if out.created else ("rolling to" if out.rolling else "unchanged at")
    console.print(f"service {out.name} {what} version {out.version}", highlight=False)
    if out.key:
        console.print(f"API key (shown once, keep it): {out.key}", highlight=False)


def _row(s: ServiceOut) -> list[str]:
    return [
        s.name,
        s.version,
        s.state,
        f"{s.live}/{s.desired}",
        f"{s.min}-{s.max}",
        s.access,
        s.note or "",
    ]


@service_app.command("list")
def list_services(json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """Your services."""
    with Client(url, token) as client:
        rows = client.service_list()
    if json_out:
        print_json([r.model_dump(mode="json", exclude_none=True) for r in rows])
        return
    table = Table("name", "version", "state", "live/desired", "min-max", "access", "note")
    for r in rows:
        table.add_row(*_row(r))
    console.print(table)


@service_app.command("status")
def status(name: str, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """A service and its replicas: state, node, gateway, region, price, health."""
    with Client(url, token) as client:
        s = client.service_status(name)
    if json_out:
        print_json(s.model_dump(mode="json", exclude_none=True))
        return
    console.print(
        f"[bold]{s.name}[/] version {s.version}, {s.state}, {s.live}/{s.desired} replicas "
        f"(min {s.min}, max {s.max}), access {s.access}, home {s.home_node}",
        highlight=False,
    )
    if s.note:
        console.print(f"note: {s.note}", highlight=False)
    if s.load is not None:
        tokens = f", {s.load.tokens_per_s:.1f} tokens/s" if s.load.tokens_per_s else ""
        console.print(
            f"load: {s.load.in_flight} in flight, {s.load.requests_per_s:.1f} req/s{tokens}",
            highlight=False,
        )
    table = Table("replica", "version", "state", "node", "region", "gateway", "price/card-h", "ok")
    for r in s.replicas or []:
        ok = "" if r.healthy is None else ("yes" if r.healthy else "NO")
        price = "" if r.price_per_card_hour is None else str(r.price_per_card_hour)
        table.add_row(
            str(r.replica), r.version, styled_state(r.state.value), r.node,
            r.region or "", r.gateway or "", price, ok,
        )  # fmt: skip
    console.print(table)


@service_app.command("scale")
def scale(
    name: str,
    min_replicas: Annotated[int | None, typer.Option("--min", min=0, max=256)] = None,
    max_replicas: Annotated[int | None, typer.Option("--max", min=1, max=256)] = None,
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Set the replica bounds the autoscaler keeps to."""
    if min_replicas is None and max_replicas is None:
        fail("give --min, --max or both", 2)
    with Client(url, token) as client:
        s = client.service_scale(name, min_replicas, max_replicas)
    if json_out:
        print_json(s.model_dump(mode="json", exclude_none=True))
        return
    console.print(f"service {s.name}: min {s.min}, max {s.max}, desired {s.desired}")


@service_app.command("logs")
def logs(
    name: str,
    replica: Annotated[
        int | None, typer.Option(help="replica number (default: the lowest)")
    ] = None,
    stream: Annotated[str, typer.Option(help="stdout or stderr")] = "stdout",
    json_out: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """The output of one replica's server (its latest attempt)."""
    if stream not in ("stdout", "stderr"):
        fail("--stream is stdout or stderr", 2)
    with Client(url, token) as client:
        out = client.service_logs(name, replica)
    if json_out:
        print_json(out.model_dump(mode="json", exclude_none=True))
        return
    if out.attempts:
        for ex in out.attempts[-1].executors:
            text = ex.stdout if stream == "stdout" else ex.stderr
            if text:
                typer.echo(text, nl=not text.endswith("\n"))


@service_app.command("delete")
def delete(name: str, url: Url = None, token: Token = None) -> None:
    """Delete a service: its replicas are cancelled."""
    with Client(url, token) as client:
        client.service_delete(name)
    console.print(f"service {name} deleting: its replicas are being cancelled", highlight=False)


@keys_app.command("create")
def key_create(name: str, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """A new API key for the service (shown only now)."""
    with Client(url, token) as client:
        k = client.service_key_create(name)
    if json_out:
        print_json(k.model_dump(mode="json"))
        return
    console.print(f"key {k.id} (shown once, keep it): {k.key}", highlight=False)


@keys_app.command("list")
def key_list(name: str, json_out: Json = False, url: Url = None, token: Token = None) -> None:
    """The service's keys (ids and dates; keys are never shown again)."""
    with Client(url, token) as client:
        keys = client.service_keys(name)
    if json_out:
        print_json([k.model_dump(mode="json", exclude_none=True) for k in keys])
        return
    table = Table("id", "created")
    for k in keys:
        table.add_row(k.id, str(k.created_at)[:19])
    console.print(table)


@keys_app.command("revoke")
def key_revoke(name: str, key_id: str, url: Url = None, token: Token = None) -> None:
    """Revoke a key: the router refuses it from then on."""
    with Client(url, token) as client:
        client.service_key_revoke(name, key_id)
    console.print(f"key {key_id} of {name} revoked", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``computenet service`` to ``app``."""
    app.add_typer(service_app, name="service")
