"""Job traces: the simulator's CSV format, an importer for Gavel/Philly traces, a generator.

CSV format (one job per row, header required, documented in docs/simulator.md)::

    job_id,tenant,arrival_s,cards,min_memory_gib,priority,origin,input_gb,workload,runtime_s.<model>...

``runtime_s.<model>`` columns give the job's run time in seconds on ``cards`` cards of that
accelerator model; an empty cell means the job cannot run on that model.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from computenet.errors import InvalidInput
from computenet.model.pool import REGION_CODE
from computenet.sched.pooltable import workload_throughputs
from computenet.sim.topology import GAVEL_CARDS

RUNTIME_PREFIX = "runtime_s."
BASE_COLUMNS = (
    "job_id",
    "tenant",
    "arrival_s",
    "cards",
    "min_memory_gib",
    "priority",
    "origin",
    "input_gb",
    "workload",
)


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a trace, as the simulator sees it."""

    job_id: str
    tenant: str
    arrival_s: float
    cards: int
    runtime_s: dict[str, float]  # accelerator model -> run time on ``cards`` of them
    min_memory_gib: int = 0
    priority: int = 0
    origin: str = ""  # GB/T 2260 code where the job's data and user are; "" = anywhere
    input_gb: float = 0.0
    workload: str = ""  # a row of the core's throughput table (e.g. a Gavel job type), if any


class _Row(BaseModel):
    """Validates one CSV row at the boundary."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=256)
    tenant: str = Field(min_length=1, max_length=128)
    arrival_s: float = Field(ge=0, allow_inf_nan=False)
    cards: int = Field(ge=1, le=100_000)
    min_memory_gib: int = Field(default=0, ge=0, le=16384)
    priority: int = Field(default=0, ge=-1000, le=1000)
    origin: str = Field(default="", pattern=rf"^(?:{REGION_CODE.pattern})?$")
    input_gb: float = Field(default=0.0, ge=0, le=1e9, allow_inf_nan=False)
    workload: str = Field(default="", max_length=128)
    runtime_s: dict[str, float]


def read_csv(path: Path) -> list[Job]:
    """Read a trace in the simulator's CSV format, refusing bad rows with their line number."""
    try:
        with path.open(newline="") as fh:
            return _parse_csv(csv.DictReader(fh), str(path))
    except OSError as exc:
        raise InvalidInput(f"cannot read trace {path}: {exc.strerror}") from exc


def _parse_csv(reader: csv.DictReader[str], name: str) -> list[Job]:
    header = reader.fieldnames or []
    missing = [c for c in ("job_id", "tenant", "arrival_s", "cards") if c not in header]
    if missing:
        raise InvalidInput(f"trace {name}: missing column(s) {', '.join(missing)}")
    models = [c[len(RUNTIME_PREFIX) :] for c in header if c.startswith(RUNTIME_PREFIX)]
    unknown = [c for c in header if c not in BASE_COLUMNS and not c.startswith(RUNTIME_PREFIX)]
    if unknown or not models:
        what = f"unknown column(s) {', '.join(unknown)}" if unknown else "no runtime_s.* column"
        raise InvalidInput(f"trace {name}: {what}")
    jobs: list[Job] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        try:
            runtimes = {
                m: float(raw[RUNTIME_PREFIX + m]) for m in models if raw[RUNTIME_PREFIX + m]
            }
            fields = {k: v for k, v in raw.items() if k in BASE_COLUMNS and v not in ("", None)}
            row = _Row.model_validate({**fields, "runtime_s": runtimes})
        except ValueError as exc:
            raise InvalidInput(f"trace {name} line {line}: {_first_error(exc)}") from exc
        if not row.runtime_s or any(not (0 < v < math.inf) for v in row.runtime_s.values()):
            raise InvalidInput(f"trace {name} line {line}: run times must be positive and finite")
        if row.job_id in seen:
            raise InvalidInput(f"trace {name} line {line}: duplicate job_id {row.job_id!r}")
        seen.add(row.job_id)
        jobs.append(Job(**row.model_dump()))
    jobs.sort(key=lambda j: j.arrival_s)
    return jobs


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)


def write_csv(jobs: Sequence[Job], path: Path) -> None:
    """Write ``jobs`` in the simulator's CSV format (read_csv reads it back unchanged)."""
    models = sorted({m for j in jobs for m in j.runtime_s})
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*BASE_COLUMNS, *(RUNTIME_PREFIX + m for m in models)])
        for j in jobs:
            base = [j.job_id, j.tenant, repr(j.arrival_s), j.cards, j.min_memory_gib, j.priority]
            rest = [j.origin, repr(j.input_gb), j.workload]
            times = [repr(j.runtime_s[m]) if m in j.runtime_s else "" for m in models]
            out.writerow([*base, *rest, *times])


def _assign(n: int, choices: Sequence[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(choices) for _ in range(n)] if choices else [""] * n


def read_gavel(
    trace: Path,
    throughputs: Path,
    tenants: int = 8,
    origins: Sequence[str] = (),
    seed: int = 0,
) -> list[Job]:
    """Import a Gavel trace (Philly-derived TSV) with Gavel's measured throughputs.

    Run time on each card type = total steps / steps-per-second of that model at that scale
    when running alone. A scale with no measurement uses the largest measured scale below it,
    scaled linearly (optimistic). A type where Gavel measured 0 (out of memory) is excluded by
    a minimum card memory above that type's. Tenants and origins are not in Gavel's traces:
    each job gets them from a seeded generator so runs repeat exactly.
    """
    try:
        table = json.loads(throughputs.read_text())
        lines = trace.read_text().splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"throughputs {throughputs} are not JSON: {exc.msg}") from exc
    speeds = _gavel_speeds(table)
    names = [f"tenant-{i}" for i in range(tenants)]
    tenant_of = _assign(len(lines), names, seed)
    origin_of = _assign(len(lines), list(origins), seed + 1)
    jobs: list[Job] = []
    for i, line in enumerate(lines):
        cols = line.split("\t")
        if len(cols) != 7:
            raise InvalidInput(f"Gavel trace {trace} line {i + 1}: expected 7 tab-separated fields")
        try:
            model, steps, arrival, scale = cols[0], int(cols[4]), float(cols[5]), int(cols[6])
        except ValueError as exc:
            raise InvalidInput(f"Gavel trace {trace} line {i + 1}: {exc}") from exc
        runtime: dict[str, float] = {}
        too_small = 0
        for kind, (catalog_id, memory_gib, _, _) in GAVEL_CARDS.items():
            rate = _rate(speeds, kind, model, scale)
            if rate is None:
                raise InvalidInput(f"Gavel trace {trace} line {i + 1}: no throughput for {model}")
            if rate > 0:
                runtime[catalog_id] = steps / rate
            else:
                too_small = max(too_small, memory_gib + 1)
        jobs.append(
            Job(
                job_id=f"gavel-{i:05d}",
                tenant=tenant_of[i],
                arrival_s=arrival,
                cards=scale,
                runtime_s=runtime,
                min_memory_gib=too_small,
                origin=origin_of[i],
                workload=model,
            )
        )
    jobs.sort(key=lambda j: j.arrival_s)
    return jobs


def _gavel_speeds(table: object) -> dict[str, dict[tuple[str, int], float]]:
    """Steps per second of each (model, scale) running alone, per card type."""
    if not isinstance(table, dict):
        raise InvalidInput("Gavel throughputs must be a JSON object keyed by card type")
    out: dict[str, dict[tuple[str, int], float]] = {}
    for kind in GAVEL_CARDS:
        rows = table.get(kind)
        if not isinstance(rows, dict):
            raise InvalidInput(f"Gavel throughputs have no {kind!r} section")
        out[kind] = {}
        for key, row in rows.items():
            model, scale = ast.literal_eval(key)
            out[kind][(str(model), int(scale))] = float(row["null"])
    return out


def _rate(
    speeds: dict[str, dict[tuple[str, int], float]], kind: str, model: str, scale: int
) -> float | None:
    measured = [s for (m, s) in speeds[kind] if m == model and s <= scale]
    if not measured:
        return None
    base = max(measured)
    return speeds[kind][(model, base)] * scale / base


def synthetic(
    n_jobs: int,
    seed: int = 0,
    tenants: int = 4,
    origins: Sequence[str] = (),
    mean_interarrival_s: float = 300.0,
) -> list[Job]:
    """A seeded synthetic trace: Poisson arrivals, 1-8 cards, log-normal work, some inputs.

    Each job is one of the workloads of the scheduler's throughput table (Gavel's job types);
    its run time on each Gavel card follows that workload's measured speeds, jittered by up
    to 10 % (multi-card jobs do not scale exactly as one card measures).
    """
    table = workload_throughputs()
    names = sorted(table)
    rng = random.Random(seed)
    t = 0.0
    jobs: list[Job] = []
    for i in range(n_jobs):
        t += rng.expovariate(1 / mean_interarrival_s)
        workload = rng.choice(names)
        rates = table[workload]
        work_s = rng.lognormvariate(math.log(3 * 3600), 1.2)  # on one K80
        runtime = {
            model: work_s * rates["k80"] / (rates[kind] * rng.uniform(0.9, 1.1))
            for kind, (model, _, _, _) in GAVEL_CARDS.items()
        }
        jobs.append(
            Job(
                job_id=f"syn-{i:05d}",
                tenant=f"tenant-{rng.randrange(tenants)}",
                arrival_s=round(t, 3),
                cards=rng.choices((1, 2, 4, 8), weights=(60, 15, 15, 10))[0],
                runtime_s=runtime,
                origin=rng.choice(list(origins)) if origins else "",
                input_gb=round(rng.lognormvariate(math.log(20), 1.0), 3),
                workload=workload,
            )
        )
    return jobs


def scale_arrivals(jobs: Sequence[Job], factor: float) -> list[Job]:
    """The same jobs with arrival times multiplied by ``factor`` (below 1: more load)."""
    if not 0 < factor < math.inf:
        raise InvalidInput(f"arrival scale must be positive, got {factor}")
    return [replace(j, arrival_s=j.arrival_s * factor) for j in jobs]
