"""Scheduling commands: find (discovery), explain, share (fair-share weights and quotas),
dataset add|list|show."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from computenet.cli.output import console, print_json
from computenet.cli.tasks import Json, Token, Url
from computenet.model.catalog import load_catalog
from computenet.model.task import Policy
from computenet.sdk.client import Client

# What each scheduler rule checks, as a user would say it.
RULE_NAMES = {
    "pinned": "pinned pool",
    "architecture": "CPU architecture",
    "accelerator": "accelerator vendor/model",
    "accelerator_memory": "accelerator memory",
    "gang": "cards in one pool",
    "cpu": "CPU cores per machine",
    "memory": "memory per machine",
    "software": "driver/CUDA/CANN version",
    "container_runtime": "container runtime",
    "region": "region",
    "price": "price cap",
    "labels": "pool labels",
}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _offer_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    table = Table(
        "#",
        "pool",
        "variant",
        "start",
        "transfer",
        "run",
        "cost",
        "gCO2",
        "rtt ms",
        "score",
        title=title or None,
    )
    for n, o in enumerate(rows, 1):
        mark = " *" if o.get("chosen") else ""
        table.add_row(
            f"{n}{mark}",
            o["pool"],
            "-" if o["variant"] < 0 else str(o["variant"]),
            _duration(o["start_s"]),
            _duration(o["transfer_s"]),
            _duration(o["run_s"]),
            f"{o['cost']:.2f}",
            f"{o['carbon_g']:.0f}",
            f"{o['rtt_ms']:.1f}",
            f"{o['score']:.3f}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add find, explain and dataset to ``app``."""

    @app.command()
    def find(
        accelerator: Annotated[str | None, typer.Option(help="model or family, e.g. A100")] = None,
        vendor: Annotated[str | None, typer.Option(help="nvidia, huawei, ...")] = None,
        count: Annotated[int, typer.Option(min=1, help="cards in one pool")] = 1,
        min_memory_gib: Annotated[int | None, typer.Option(min=1)] = None,
        cpus: Annotated[int, typer.Option(min=1)] = 1,
        ram_gb: Annotated[float, typer.Option(min=0.001)] = 1.0,
        region: Annotated[list[str] | None, typer.Option(help="allowed GB/T 2260 region")] = None,
        max_price: Annotated[str | None, typer.Option(help="max price per card-hour")] = None,
        dataset: Annotated[list[str] | None, typer.Option(help="dataset the work reads")] = None,
        runtime_hint_s: Annotated[int | None, typer.Option(help="run time on a V100")] = None,
        workload: Annotated[str | None, typer.Option(help="throughput-table workload")] = None,
        policy: Annotated[Policy, typer.Option(help="how to rank")] = Policy.BALANCED,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Find pools for a task template, ranked, with estimated start, run time, cost, carbon."""
        params: dict[str, Any] = {
            "accelerator": accelerator,
            "vendor": vendor,
            "count": count,
            "min_memory_gib": min_memory_gib,
            "cpus": cpus,
            "ram_gb": ram_gb,
            "region": region or [],
            "max_price": max_price,
            "dataset": dataset or [],
            "runtime_hint_s": runtime_hint_s,
            "workload": workload,
            "policy": policy.value,
            "limit": limit,
        }
        with Client(url, token) as client:
            rows = client.offers({k: v for k, v in params.items() if v is not None})
        if json_out:
            print_json(rows)
        elif not rows:
            console.print("no pool matches; `computenet pools` lists what exists")
        else:
            console.print(_offer_table(rows, f"offers under policy {policy.value}"))

    @app.command()
    def catalog(
        vendor: Annotated[str | None, typer.Option(help="only this vendor's models")] = None,
        json_out: Json = False,
    ) -> None:
        """The accelerator models tasks may ask for (--gpu-model), from the shipped catalog."""
        rows = [m for m in load_catalog() if vendor is None or m.vendor == vendor.lower()]
        if json_out:
            print_json(
                [
                    {
                        "model": m.model,
                        "vendor": m.vendor,
                        "name": m.name,
                        "aliases": list(m.aliases),
                        "memory_gib": m.memory_gib,
                        "fp16_dense_tflops": m.fp16_dense_tflops,
                    }
                    for m in rows
                ]
            )
            return
        table = Table("model", "vendor", "name", "memory GiB", "FP16 TFLOPS")
        for m in rows:
            table.add_row(
                m.model,
                m.vendor,
                m.name,
                "-" if m.memory_gib is None else str(m.memory_gib),
                "-" if m.fp16_dense_tflops is None else str(m.fp16_dense_tflops),
            )
        console.print(table)

    @app.command()
    def explain(task_id: str, json_out: Json = False, url: Url = None, token: Token = None) -> None:
        """Why a task is not placed, or why its pool won against the runners-up."""
        with Client(url, token) as client:
            ex = client.explain(task_id)
        if json_out:
            print_json(ex)
            return
        where = ex["pool"] or "not placed"
        console.print(
            f"{ex['task_id']}  {ex['state']}  {where}  (policy {ex['policy']})", highlight=False
        )
        if ex["placement"]:
            console.print(f"  {ex['placement']}", highlight=False)
        if ex["reason"]:
            console.print(f"  why: {ex['reason']}", highlight=False)
        total = ex["pools_total"]
        console.print(
            f"  {ex['eligible']} of {total} pool{'' if total == 1 else 's'} pass every constraint",
            highlight=False,
        )
        for rule, n in sorted(ex["excluded"].items(), key=lambda kv: -kv[1]):
            pools = "1 pool" if n == 1 else f"{n} pools"
            what = RULE_NAMES.get(rule, rule.replace("_", " "))
            console.print(f"  {what}: excluded {pools}", highlight=False)
        if ex.get("speed_note"):  # nodes that report it: estimates from declared run times
            console.print(f"  note: {ex['speed_note']}", highlight=False)
        if ex["candidates"]:
            console.print(_offer_table(ex["candidates"], "candidates (* = chosen)"))

    @app.command()
    def share(
        tenant: Annotated[str | None, typer.Argument(help="set this tenant's share")] = None,
        weight: Annotated[float, typer.Option(help="fair-share weight (1 = an equal share)")] = 1.0,
        quota: Annotated[
            float | None, typer.Option(help="most cards it may hold at once (CPU: cores / 8)")
        ] = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Tenants' fair-share weights and quotas; with TENANT, set its (operators)."""
        with Client(url, token) as client:
            if tenant is not None:
                client.set_share(tenant, weight, quota)
            rows = client.shares()
        if json_out:
            print_json(rows)
            return
        table = Table("tenant", "weight", "quota (cards)", "holds (cards)")
        for r in rows:
            quota_text = "-" if r["quota_cards"] is None else f"{r['quota_cards']:g}"
            table.add_row(r["tenant"], f"{r['weight']:g}", quota_text, f"{r['held_cards']:g}")
        console.print(table)

    dataset_app = typer.Typer(help="The dataset registry used by data-aware placement.")
    app.add_typer(dataset_app, name="dataset")

    @dataset_app.command("add")
    def dataset_add(
        name: str,
        size_gb: Annotated[float, typer.Option(min=0, help="size in GB (10^9 bytes)")],
        region: Annotated[list[str], typer.Option(help="region holding a replica (repeat)")],
        description: Annotated[str, typer.Option()] = "",
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Register a dataset, its size and the regions that hold replicas."""
        with Client(url, token) as client:
            out = client.add_dataset(name, int(size_gb * 1e9), region, description)
        print_json(out) if json_out else console.print(f"dataset {out['name']} registered")

    def _datasets_table(rows: list[dict[str, Any]]) -> Table:
        table = Table("name", "size GB", "regions", "owner", "description")
        for d in rows:
            table.add_row(
                d["name"],
                f"{d['size_bytes'] / 1e9:g}",
                ",".join(d["regions"]),
                d["owner"],
                d["description"],
            )
        return table

    @dataset_app.command("list")
    def dataset_list(json_out: Json = False, url: Url = None, token: Token = None) -> None:
        """Every registered dataset."""
        with Client(url, token) as client:
            rows = client.datasets()
        print_json(rows) if json_out else console.print(_datasets_table(rows))

    @dataset_app.command("show")
    def dataset_show(
        name: str, json_out: Json = False, url: Url = None, token: Token = None
    ) -> None:
        """One dataset."""
        with Client(url, token) as client:
            rows = client.datasets(name)
        print_json(rows[0]) if json_out else console.print(_datasets_table(rows))
