"""Pure helpers of the Slurm backend: reading Slurm's command output, writing batch scripts.

Nothing here runs a command, so everything is tested against outputs recorded from a real
Slurm (``tests/gateway/fixtures/slurm/``). Formats are those of Slurm 22.05:

- ``scontrol show node -o`` / ``show partition -o`` / ``show job -o``: one record per line
  of ``Key=Value`` words; a value may contain spaces (``OS=Linux 6.1 #1 SMP``).
- ``squeue -h -o "%i|%T"`` and ``sacct -n -P -o ...``: ``|``-separated columns.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from computenet.gateway.backends.base import ExecutorStatus, JobStatus
from computenet.model.catalog import load_catalog
from computenet.model.pool import Accelerator, Architecture, Capacity, PoolSpec, Region, Software
from computenet.model.task import TaskSpec, TaskState

_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_:/.]*)=(.*)$")
_NONE = frozenset({"", "(null)", "none", "n/a", "unknown", "unlimited", "infinite", "invalid"})
_LABEL_BAD = re.compile(r"[^a-z0-9-]+")
_ENV_NAME = re.compile(r"^[^=\x00]+$")

# Pending reasons that mean the job can never start where it is (not just "wait").
NEVER_STARTS = frozenset(
    {"PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints"}
)
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING"})


def parse_records(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show ... -o`` output: one ``{key: value}`` dict per non-empty line.

    A word without ``=`` belongs to the previous value (values may contain spaces).
    """
    records = []
    for line in text.splitlines():
        record: dict[str, str] = {}
        key = ""
        for word in line.split():
            match = _KEY.match(word)
            if match:
                key = match.group(1)
                record[key] = match.group(2)
            elif key:
                record[key] += " " + word
        if record:
            records.append(record)
    return records


def is_none(value: str | None) -> bool:
    """True for Slurm's spellings of "no value" (``(null)``, ``N/A``, ``UNLIMITED``, ...)."""
    return value is None or value.strip().lower() in _NONE


def parse_int(value: str | None, default: int = 0) -> int:
    """An integer field, ``default`` when absent or not a number."""
    try:
        return int(str(value).strip())
    except ValueError:
        return default


@dataclass(frozen=True)
class GresItem:
    """One generic resource of a node: ``gpu:a100:4(S:0-1)`` is ``("gpu", "a100", 4)``."""

    name: str
    type: str | None
    count: int


def parse_gres(text: str | None) -> list[GresItem]:
    """Parse a node's ``Gres=`` value (``gpu:2``, ``gpu:a100:4(S:0-1),mps:200``, ``(null)``)."""
    if is_none(text):
        return []
    items = []
    for part in re.split(r",(?![^(]*\))", str(text)):
        part = re.sub(r"\(.*?\)", "", part).strip()
        if not part:
            continue
        fields = part.split(":")
        name, rest = fields[0], fields[1:]
        count = 1
        if rest and re.fullmatch(r"\d+[KMG]?", rest[-1]):
            count = _count(rest.pop())
        items.append(GresItem(name=name, type=":".join(rest) or None, count=count))
    return items


def _count(text: str) -> int:
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
    return int(text.rstrip("KMG")) * scale


def gpus(gres: Iterable[GresItem]) -> tuple[int, str | None]:
    """Total ``gpu`` count of a node and its type (``None`` when untyped or mixed)."""
    items = [g for g in gres if g.name == "gpu"]
    types = {g.type for g in items}
    return sum(g.count for g in items), (types.pop() if len(types) == 1 else None)


def parse_duration(text: str | None) -> int | None:
    """Seconds of a Slurm duration (``[D-]HH:MM:SS``, ``MM:SS``, ``MM``), None if unlimited."""
    if is_none(text):
        return None
    value = str(text).strip()
    days = 0
    if "-" in value:
        head, value = value.split("-", 1)
        days = parse_int(head)
    parts = [parse_int(p) for p in value.split(":")]
    if len(parts) == 1:  # plain minutes
        seconds = parts[0] * 60
    elif len(parts) == 2:  # minutes:seconds
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = parts[-3] * 3600 + parts[-2] * 60 + parts[-1]
    return days * 86400 + seconds


def parse_time(text: str | None) -> datetime | None:
    """A Slurm timestamp (``2026-11-21T16:26:41``, the controller's local time), aware."""
    if is_none(text):
        return None
    try:
        return datetime.fromisoformat(str(text).strip()).astimezone()
    except ValueError:
        return None


def parse_exit_code(text: str | None) -> tuple[int, int]:
    """``ExitCode=2:0`` as (exit status, signal)."""
    code, _, signal = str(text or "0:0").partition(":")
    return parse_int(code), parse_int(signal)


def parse_state(text: str | None) -> str:
    """A job state word (``CANCELLED by 0`` -> ``CANCELLED``, ``COMPLETING+`` -> ``COMPLETING``)."""
    return re.split(r"[\s+]", str(text or "").strip(), maxsplit=1)[0].upper()


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """``squeue -h -o "%i|%T|%r"`` output as ``{job id: (state, reason)}``."""
    out = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) >= 2 and cells[0]:
            reason = cells[2].strip() if len(cells) > 2 else ""
            out[cells[0]] = (parse_state(cells[1]), "" if is_none(reason) else reason)
    return out


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says of one job (from ``scontrol show job`` or ``sacct``)."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: int = 0
    signal: int = 0
    start: datetime | None = None
    end: datetime | None = None


def job_from_scontrol(record: dict[str, str]) -> SlurmJob:
    """A :class:`SlurmJob` from one ``scontrol show job -o`` record."""
    code, signal = parse_exit_code(record.get("ExitCode"))
    return SlurmJob(
        job_id=record.get("JobId", ""),
        state=parse_state(record.get("JobState")),
        reason="" if is_none(record.get("Reason")) else record.get("Reason", ""),
        exit_code=code,
        signal=signal,
        start=parse_time(record.get("StartTime")),
        end=parse_time(record.get("EndTime")),
    )


SACCT_FIELDS = "JobID,State,ExitCode,Start,End"


def parse_sacct(text: str) -> dict[str, SlurmJob]:
    """``sacct [-c] -n -P -o JobID,State,ExitCode,Start,End`` as ``{job id: SlurmJob}``.

    Job steps (``123.batch``) are skipped; the last line of a job id wins (requeued jobs).
    """
    out = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) < 5 or "." in cells[0] or not cells[0]:
            continue
        code, signal = parse_exit_code(cells[2])
        out[cells[0]] = SlurmJob(
            job_id=cells[0],
            state=parse_state(cells[1]),
            exit_code=code,
            signal=signal,
            start=parse_time(cells[3]),
            end=parse_time(cells[4]),
        )
    return out


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``)."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


_DOWN = (
    "unable to contact slurm controller",
    "socket timed out",
    "zero bytes were transmitted",
    "communication connection failure",
    "connection refused",
    "slurmctld is down",
    "munge encode failed",
    "munge decode failed",
    "failed to connect",
)
_AUTH = (
    "invalid user id",
    "access/permission denied",
    "protocol authentication error",
    "authentication failure",
    "user's group not permitted",
    "invalid account",
)
_CAPACITY = (
    "requested node configuration is not available",
    "requested partition configuration not available",
    "invalid partition name",
    "invalid generic resource",
    "memory specification can not be satisfied",
    "more processors requested than permitted",
    "node count specification invalid",
    "job violates accounting/qos policy",
    "qosmaxsubmitjob",
    "assocmaxsubmitjob",
    "partition_limit",
    "partition limit",
    "requested time limit is invalid",
    "slurm temporarily unable to accept job",
)


def classify_error(stderr: str) -> str:
    """Sort a failing Slurm command's message: ``down``, ``auth``, ``capacity`` or ``other``."""
    text = stderr.lower()
    for kind, needles in (("down", _DOWN), ("auth", _AUTH), ("capacity", _CAPACITY)):
        if any(n in text for n in needles):
            return kind
    return "other"


def sanitize_label(name: str, prefix: str = "") -> str:
    """A pool label (DNS-style, at most 63 characters) from a partition name."""
    label = _LABEL_BAD.sub("-", (prefix + name).lower()).strip("-")[:63].strip("-")
    return label or "slurm"


def wait_estimate_s(pending: Iterable[tuple[int, int | None]], cpus: int, default_s: int) -> int:
    """How long a new job waits behind the pending queue, in seconds.

    ``pending`` holds ``(cpus, time limit in s or None)`` per pending job. The estimate is the
    time the partition's ``cpus`` need to work through the queued CPU-seconds, each job
    counted at its time limit (``default_s`` when it has none):
    ``ceil(sum(cpus_j * limit_j) / cpus)``. It ignores running jobs and backfill, so it is a
    coarse upper bound for small jobs and exact only for a queue of whole-partition jobs.
    """
    work = sum(c * (limit if limit is not None else default_s) for c, limit in pending)
    return math.ceil(work / max(1, cpus)) if work else 0


# --- pools ------------------------------------------------------------------------------------

DEFAULT_JOB_S = 3600  # a pending job without any time limit counts this long in the estimate


@dataclass
class Partition:
    """A partition and the ``scontrol show node`` records of its nodes."""

    name: str
    label: str
    nodes: list[dict[str, str]]
    max_time_s: int | None
    default_time_s: int | None
    total_cpus: int


def partitions(
    partition_text: str, node_text: str, selected: list[str] | None, prefix: str = ""
) -> list[Partition]:
    """The UP partitions with nodes (only ``selected`` ones when given), labelled uniquely."""
    nodes = parse_records(node_text)
    found: list[Partition] = []
    labels: set[str] = set()
    for rec in parse_records(partition_text):
        name = rec.get("PartitionName", "")
        if (selected is not None and name not in selected) or rec.get("State", "UP") != "UP":
            continue
        members = [n for n in nodes if name in n.get("Partitions", "").split(",")]
        if not members:
            continue
        label = sanitize_label(name, prefix)
        while label in labels:  # two names that fold to one label
            label = sanitize_label(f"{label[:58]}-{len(labels)}")
        labels.add(label)
        found.append(
            Partition(
                name=name,
                label=label,
                nodes=members,
                max_time_s=parse_duration(rec.get("MaxTime")),
                default_time_s=parse_duration(rec.get("DefaultTime")),
                total_cpus=parse_int(rec.get("TotalCPUs")),
            )
        )
    return found


def parse_pending(text: str) -> dict[str, list[tuple[int, int | None]]]:
    """``squeue -h -t PD -o "%P|%C|%l"`` as ``{partition: [(cpus, limit s or None)]}``."""
    pending: dict[str, list[tuple[int, int | None]]] = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) == 3:
            for name in cells[0].split(","):
                pending.setdefault(name, []).append(
                    (parse_int(cells[1], 1), parse_duration(cells[2]))
                )
    return pending


def accelerator(count: int, gres_type: str | None) -> Accelerator:
    """The card a GRES ``gpu[:TYPE]:N`` describes: the catalog's model for TYPE when known."""
    info = load_catalog().resolve(gres_type) if gres_type else None
    if info is not None:
        memory = int(info.memory_gib * 1024) if info.memory_gib else 0
        return Accelerator(vendor=info.vendor, model=info.model, memory_mib=memory, count=count)
    model = sanitize_label(f"nvidia-unknown-{gres_type}" if gres_type else "nvidia-unknown")
    return Accelerator(vendor="nvidia", model=model, memory_mib=0, count=count)


def pool_spec(
    part: Partition,
    pending: list[tuple[int, int | None]],
    *,
    region: Region | None = None,
    price_per_core_hour: Decimal = Decimal(0),
    price_per_card_hour: Decimal = Decimal(0),
) -> PoolSpec:
    """One partition as a pool: the smallest node's cores and memory, the smallest GPU count
    among nodes with GPUs, the node count, and the pending queue in ``labels``."""
    nodes = part.nodes
    cards = [gpus(parse_gres(n.get("Gres"))) for n in nodes]
    with_gpus = [c for c in cards if c[0] > 0]
    card = None
    if with_gpus:
        types = {t for _, t in with_gpus}
        card = accelerator(min(c for c, _ in with_gpus), types.pop() if len(types) == 1 else None)
    arch = nodes[0].get("Arch", "")
    default_s = part.default_time_s or part.max_time_s or DEFAULT_JOB_S
    bad = ("DOWN", "DRAIN", "FAIL")
    usable = [n for n in nodes if not any(s in n.get("State", "") for s in bad)]
    labels = {
        "slurm_partition": part.name[:200],
        "pending_jobs": str(len(pending)),
        "wait_estimate_s": str(wait_estimate_s(pending, part.total_cpus, default_s)),
        "nodes_usable": str(len(usable)),
    }
    if len(with_gpus) not in (0, len(nodes)):
        labels["gpu_nodes"] = str(len(with_gpus))
    extra: dict[str, Any] = {"region": region} if region is not None else {}
    return PoolSpec(
        label=part.label,
        backend="slurm",
        architecture=Architecture(arch) if arch in set(Architecture) else Architecture.OTHER,
        cpu_cores=max(1, min(parse_int(n.get("CPUTot"), 1) for n in nodes)),
        memory_mib=max(1, min(parse_int(n.get("RealMemory"), 1) for n in nodes)),
        machines=len(nodes),
        accelerator=card,
        software=Software(os=nodes[0].get("OS", "")[:128]),
        price_per_core_hour=price_per_core_hour,
        price_per_card_hour=price_per_card_hour if card else Decimal(0),
        labels=labels,
        **extra,
    )


def refusal(part: Partition, need: Capacity, time_limit_s: int | None) -> str | None:
    """Why Slurm would take this job and leave it pending forever, or None if some node fits."""
    for node in part.nodes:
        if (
            need.cpu_cores <= parse_int(node.get("CPUTot"))
            and need.memory_mib <= parse_int(node.get("RealMemory"))
            and need.accelerators <= gpus(parse_gres(node.get("Gres")))[0]
        ):
            break
    else:
        return (
            f"no node of partition {part.name} has {need.cpu_cores} cores, "
            f"{need.memory_mib} MiB and {need.accelerators} GPUs"
        )
    if time_limit_s and part.max_time_s is not None and time_limit_s > part.max_time_s:
        return f"partition {part.name} allows at most {part.max_time_s} s per job"
    return None


# --- job outcomes ------------------------------------------------------------------------------


def parse_events(text: str) -> list[dict[str, Any]]:
    """The batch script's ``status.jsonl`` (a torn last line is skipped)."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _utc(t_us: object) -> datetime:
    return datetime.fromtimestamp(int(str(t_us)) / 1e6, UTC)


def status_from_events(
    events: list[dict[str, Any]],
    time_limit_s: int | None,
    state: TaskState | None = None,
    message: str = "",
    now_us: int | None = None,
) -> JobStatus:
    """Executor details and wall time from the script's events; the outcome too when the
    script finished and ``state`` is None (then RUNNING if it has not finished)."""
    executors: dict[int, ExecutorStatus] = {}
    start = end = None
    done: dict[str, Any] | None = None
    for e in events:
        kind = e.get("event")
        if kind == "start":
            start = int(e["t_us"])
        elif kind in ("exec_start", "exec_end"):
            ex = executors.setdefault(int(e["index"]), ExecutorStatus(index=int(e["index"])))
            if kind == "exec_start":
                ex.start_time = _utc(e["t_us"])
            else:
                ex.end_time, ex.exit_code = _utc(e["t_us"]), int(e["exit_code"])
        elif kind in ("done", "signal"):
            end = int(e["t_us"])
            done = e if kind == "done" else done
            for ex in executors.values():  # killed by Slurm (scancel): it ended here
                if ex.start_time is not None and ex.end_time is None:
                    ex.end_time = _utc(end)
    if state is None and done is not None:
        index, outcome = int(done["index"]), done["outcome"]
        if outcome == "complete":
            state = TaskState.COMPLETE
        elif outcome == "timeout":
            state, message = TaskState.EXECUTOR_ERROR, f"time limit of {time_limit_s} s exceeded"
        else:
            code = executors[index].exit_code if index in executors else None
            state, message = TaskState.EXECUTOR_ERROR, f"executor {index} exited with code {code}"
    if end is None and start is not None and now_us is not None:
        end = now_us
    wall = Decimal(end - start) / 10**6 if start is not None and end is not None else Decimal(0)
    return JobStatus(
        state=state or TaskState.RUNNING,
        executors=[executors[i] for i in sorted(executors)],
        message=message,
        wall_s=max(Decimal(0), wall),
    )


def finished(events: list[dict[str, Any]]) -> bool:
    """True when the script wrote its outcome (every executor is done)."""
    return any(e.get("event") == "done" for e in events)


def map_ended(record: SlurmJob, time_limit_s: int | None, memory_mib: int) -> tuple[TaskState, str]:
    """The TES state and message of a job Slurm ended without the script's outcome."""
    state = record.state
    if state == "CANCELLED":
        return TaskState.CANCELED, "canceled"
    if state == "TIMEOUT":
        if time_limit_s:
            return TaskState.EXECUTOR_ERROR, f"time limit of {time_limit_s} s exceeded"
        return TaskState.EXECUTOR_ERROR, "the partition's time limit was exceeded"
    if state == "OUT_OF_MEMORY":
        return TaskState.EXECUTOR_ERROR, f"out of memory (limit {memory_mib} MiB)"
    if state in ("COMPLETED", "FAILED"):
        return TaskState.SYSTEM_ERROR, (
            f"the batch script ended (exit code {record.exit_code}, signal {record.signal}) "
            "before its executors finished; see slurm.err in the job directory"
        )
    return (
        TaskState.SYSTEM_ERROR,
        f"Slurm job {record.job_id} ended {state} {record.reason}".strip(),
    )


# --- the batch script ----------------------------------------------------------------------

_PROLOGUE = r"""#!/bin/bash
# ComputeNet job {key}: written by computenet's Slurm backend; do not edit.
# Runs the executors in order, each in its own workdir with stdout/stderr to
# exec-<i>.stdout/.stderr; progress goes to status.jsonl (times in microseconds).
set -u
cn_dir={jobdir}
cn_work={work}
cn_limit_us={limit_us}
cn_status="$cn_dir/status.jsonl"
cn_us() {{  # microseconds since the epoch (bash 5 without a fork, else date)
    local t=${{EPOCHREALTIME:-}}
    if [[ -n $t ]]; then echo "${{t//[.,]/}}"; else date +%s%6N; fi
}}
cn_log() {{ printf '%s\n' "$1" >>"$cn_status"; }}
cn_finish() {{
    cn_log "{{\"event\":\"done\",\"outcome\":\"$1\",\"index\":$2,\"t_us\":$(cn_us)}}"
    exit "$3"
}}
cn_run() {{  # INDEX IGNORE_ERROR WORKDIR STDIN COMMAND...
    local i=$1 ignore=$2 cwd=$3 in=$4 code t left timed_out=false limit=()
    shift 4
    cn_stop_if_signalled
    if ((cn_limit_us > 0)); then
        left=$((cn_t0 + cn_limit_us - $(cn_us)))
        ((left > 0)) || cn_finish timeout "$i" 124
        limit=(timeout -k 2 "$((left / 1000000)).$(printf '%06d' $((left % 1000000)))")
    fi
    cn_log "{{\"event\":\"exec_start\",\"index\":$i,\"t_us\":$(cn_us)}}"
    (cd -- "$cwd" && exec ${{limit[@]+"${{limit[@]}}"}} "$@" <"$in") \
        >"$cn_dir/exec-$i.stdout" 2>"$cn_dir/exec-$i.stderr"
    code=$?
    t=$(cn_us)
    if ((cn_limit_us > 0 && (code == 124 || code == 137) && t >= cn_t0 + cn_limit_us)); then
        timed_out=true
    fi
    cn_log "{{\"event\":\"exec_end\",\"index\":$i,\"t_us\":$t,\"exit_code\":$code,\
\"timed_out\":$timed_out}}"
    cn_stop_if_signalled
    [[ $timed_out == false ]] || cn_finish timeout "$i" "$code"
    ((code == 0 || ignore == 1)) || cn_finish failed "$i" "$code"
}}
# Slurm signals every process of the job (scancel, its own time limit): bash runs the trap
# once the executor has died, so its exit code is logged before the script stops.
cn_signalled=0
trap 'cn_signalled=1' TERM
cn_stop_if_signalled() {{
    ((cn_signalled == 0)) || {{ cn_log "{{\"event\":\"signal\",\"t_us\":$(cn_us)}}"; exit 143; }}
}}
export HOME="$cn_work" TMPDIR="$cn_work"
mkdir -p -- "$cn_work"
cn_t0=$(cn_us)
cn_log "{{\"event\":\"start\",\"t_us\":$cn_t0}}"
"""


def executor_dir(work: Path, workdir: str | None) -> Path:
    """Where an executor runs: its workdir (a container path) maps under the job's work dir."""
    return work / workdir.lstrip("/") if workdir else work


def batch_script(key: str, jobdir: Path, spec: TaskSpec) -> str:
    """The bash batch script that runs ``spec``'s executors; every user string is quoted."""
    work = jobdir / "work"
    limit = spec.resources.time_limit_s
    lines = [
        _PROLOGUE.format(
            key=re.sub(r"[^\w.-]", "_", key),
            jobdir=shlex.quote(str(jobdir)),
            work=shlex.quote(str(work)),
            limit_us=(limit or 0) * 1_000_000,
        )
    ]
    for index, ex in enumerate(spec.executors):
        cwd = executor_dir(work, ex.workdir)
        stdin = str(cwd / ex.stdin) if ex.stdin else "/dev/null"
        words = [str(index), "1" if ex.ignore_error else "0", str(cwd), stdin]
        assignments = [f"{k}={v}" for k, v in ex.env.items() if _ENV_NAME.match(k)]
        command = list(ex.command)
        if assignments:
            if "=" in command[0]:  # env would take the program for one more assignment
                command = ["/bin/sh", "-c", 'exec "$@"', "sh", *command]
            command = ["env", "--", *assignments, *command]
        lines.append(f"mkdir -p -- {shlex.quote(str(cwd))}")
        lines.append("cn_run " + " ".join(shlex.quote(w) for w in [*words, *command]))
    lines.append(f"cn_finish complete {len(spec.executors) - 1} 0")
    return "\n".join(lines) + "\n"
