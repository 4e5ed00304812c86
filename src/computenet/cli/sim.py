"""``computenet sim``: compare placement policies on a trace, in virtual time."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from computenet.cli.output import console, fail
from computenet.sim.baselines import BASELINES, random_placer
from computenet.sim.core_adapter import CORE_POLICIES, CorePlacer
from computenet.sim.engine import SimResult, simulate
from computenet.sim.metrics import summarize
from computenet.sim.national import (
    Federation,
    load_federation,
    national_topology,
    parse_national,
)
from computenet.sim.placers import Placer
from computenet.sim.report import text, write_all
from computenet.sim.scale_engine import POLICIES as SCALE_POLICIES
from computenet.sim.scale_engine import ScaleEngine
from computenet.sim.scale_report import summarize_scale, write_scale
from computenet.sim.scale_report import text as scale_text
from computenet.sim.tasks import DEFAULT_LOAD, synthetic_tasks
from computenet.sim.topology import Topology, default_topology, load_topology
from computenet.sim.trace import (
    Job,
    read_csv,
    read_gavel,
    scale_arrivals,
    synthetic,
    write_csv,
)

ALL_POLICIES = (*CORE_POLICIES, *BASELINES)


def load_jobs(trace: str, topology: Topology, throughputs: Path | None, seed: int) -> list[Job]:
    """Jobs from ``synthetic:N``, a simulator CSV, or a Gavel trace (with its throughputs)."""
    origins = sorted(topology.sites)
    if trace.startswith("synthetic:"):
        count = trace.removeprefix("synthetic:")
        if not count.isdigit() or not 0 < int(count) <= 1_000_000:
            fail(f"--trace synthetic:N needs N between 1 and 1000000, got {count!r}", 2)
        return synthetic(int(count), seed=seed, origins=origins)
    path = Path(trace)
    if not path.is_file():
        fail(f"trace {path} not found (the Gavel trace is in ../shared/data/gavel/)", 2)
    if path.suffix == ".csv":
        return read_csv(path)
    table = throughputs or path.with_name("simulation_throughputs.json")
    if not table.is_file():
        fail(f"Gavel throughputs {table} not found: pass --throughputs", 2)
    return read_gavel(path, table, origins=origins, seed=seed)


def placers(names: str, topology: Topology, jobs: list[Job], seed: int) -> list[Placer]:
    """The placers for ``all`` or a comma-separated list of names."""
    wanted = list(ALL_POLICIES) if names == "all" else [n.strip() for n in names.split(",")]
    unknown = [n for n in wanted if n not in ALL_POLICIES]
    if unknown or not wanted:
        fail(f"unknown policy {', '.join(unknown)!r}; choose from {', '.join(ALL_POLICIES)}", 2)
    out: list[Placer] = []
    for name in wanted:
        if name in CORE_POLICIES:
            out.append(CorePlacer(name, topology, jobs))
        elif name == "random":
            out.append(random_placer(topology, seed))
        else:
            out.append(BASELINES[name](topology))
    return out


def register(app: typer.Typer) -> None:
    """Add ``computenet sim`` to ``app``."""

    @app.command()
    def sim(
        trace: Annotated[str, typer.Option(help="trace: a .csv, a Gavel .trace, or synthetic:N")],
        topology: Annotated[
            str, typer.Option(help="'default', 'national[:POOLS]', or a topology JSON")
        ] = "default",
        policies: Annotated[str, typer.Option(help="'all' or a,b,...")] = "all",
        out: Annotated[Path, typer.Option(help="directory for the table and plots")] = Path(
            "sim-out"
        ),
        throughputs: Annotated[
            Path | None, typer.Option(help="Gavel throughputs [default: next to the trace]")
        ] = None,
        seed: Annotated[int, typer.Option(help="seed for tenants, origins, random")] = 0,
        arrival_scale: Annotated[
            float, typer.Option(help="multiply arrival times (below 1 = more load)")
        ] = 1.0,
        force: Annotated[
            bool, typer.Option("--force", help="write into --out even if it holds files")
        ] = False,
        load: Annotated[
            float, typer.Option(help="federations: offered work / capacity of the trace")
        ] = DEFAULT_LOAD,
    ) -> None:
        """Run a trace through the scheduler's policies and the baselines in virtual time."""
        if out.exists() and not out.is_dir():
            fail(f"--out {out} is a file, not a directory")
        if not force and out.is_dir() and any(out.iterdir()):
            fail(f"--out {out} is not empty: choose another directory or add --force to overwrite")
        began = time.perf_counter()
        fed = _federation(topology)
        if fed is not None:
            _national(fed, trace, policies, out, seed, load, began)
            return
        topo = default_topology() if topology == "default" else load_topology(Path(topology))
        jobs = load_jobs(trace, topo, throughputs, seed)
        if arrival_scale != 1.0:
            jobs = scale_arrivals(jobs, arrival_scale)
        if not jobs:
            fail("the trace has no jobs", 2)
        chosen = placers(policies, topo, jobs, seed)
        results: list[SimResult] = []
        columns = (
            TextColumn("{task.description:>15}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            for placer in chosen:
                task = bar.add_task(placer.name, total=len(jobs))

                def advance(n: int, task: TaskID = task) -> None:
                    bar.advance(task, n)

                results.append(simulate(jobs, topo, placer, advance))
        summaries = [summarize(r) for r in results]
        out.mkdir(parents=True, exist_ok=True)
        write_csv(jobs, out / "trace.csv")
        write_all(out, results, summaries)
        console.print(text(summaries), highlight=False, soft_wrap=True)
        elapsed = time.perf_counter() - began
        console.print(f"{len(jobs)} jobs, {len(topo.pools)} pools; wrote {out}/ in {elapsed:.1f} s")


def _federation(topology: str) -> Federation | None:
    """The federation named by ``--topology`` (``national`` or a file with nodes), or None
    for a flat topology."""
    pools = parse_national(topology)
    if pools is not None:
        return national_topology(pools=pools)
    path = Path(topology)
    if topology == "default" or not path.is_file():
        return None
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # load_topology reports the error in the flat format's words
    return load_federation(path) if isinstance(head, dict) and "nodes" in head else None


def _national(
    fed: Federation, trace: str, policies: str, out: Path, seed: int, load: float, began: float
) -> None:
    """Run synthetic tasks over a federation with the national-scale engine."""
    count = trace.removeprefix("synthetic:")
    if not trace.startswith("synthetic:") or not count.isdigit():
        fail("a federation topology replays synthetic:N traces only (docs/simulator.md)", 2)
    if not 0 < int(count) <= 10_000_000:
        fail(f"--trace synthetic:N needs N between 1 and 10000000, got {count}", 2)
    wanted = list(SCALE_POLICIES) if policies == "all" else [p.strip() for p in policies.split(",")]
    unknown = [p for p in wanted if p not in SCALE_POLICIES]
    if unknown or not wanted:
        fail(f"unknown policy {', '.join(unknown)!r}; choose from {', '.join(SCALE_POLICIES)}", 2)
    tasks = synthetic_tasks(int(count), fed, load=load, seed=seed)
    summaries = []
    columns = (TextColumn("{task.description:>15}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        for name in wanted:
            task = bar.add_task(name, total=len(tasks))

            def advance(n: int, task: TaskID = task) -> None:
                bar.advance(task, n)

            result = ScaleEngine(fed, tasks, name, seed).run(advance)
            summaries.append(summarize_scale(fed, tasks, result))
    elapsed = time.perf_counter() - began
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    facts = {
        "nodes": len(fed.nodes),
        "pools": len(fed),
        "cards": int(fed.cards.sum()),
        "tasks": len(tasks),
        "load": load,
        "sync_delay_s": fed.sync_delay_s,
        "wall_s": round(elapsed, 1),
        "peak_rss_mib": round(peak_mib),
    }
    write_scale(out, summaries, facts)
    console.print(scale_text(summaries), highlight=False, soft_wrap=True)
    console.print(
        f"{len(tasks)} tasks, {len(fed.nodes)} nodes, {len(fed)} pools; wrote {out}/ in "
        f"{elapsed:.1f} s, peak memory {peak_mib:.0f} MiB"
    )
