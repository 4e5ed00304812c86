"""GA4GH TES 1.1 <-> ComputeNet task mapping.

TES tasks arrive with TES fields only; our extensions ride on
``resources.backend_parameters`` under the keys in :data:`BACKEND_PARAMETERS`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from computenet.errors import InvalidInput
from computenet.model.task import (
    AcceleratorRequest,
    Executor,
    Input,
    Output,
    Placement,
    Policy,
    Resources,
    TaskSpec,
)
from computenet.model.tes_params import BACKEND_PARAMETERS as BACKEND_PARAMETERS  # re-exported
from computenet.node.views import TaskOut, View


class TesResources(BaseModel):
    """TES resources, exactly as the spec defines them."""

    model_config = ConfigDict(extra="forbid")
    cpu_cores: int | None = Field(default=None, ge=1, le=4096)
    preemptible: bool | None = None
    ram_gb: float | None = Field(default=None, gt=0, le=65536)
    disk_gb: float | None = Field(default=None, gt=0, le=10**7)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = False


class TesExecutor(Executor):
    """A TES executor: like ours, but the image is required."""

    image: str = Field(min_length=1, max_length=512)


class TesTask(BaseModel):
    """A TES task as a client creates it. Read-only fields are accepted and ignored."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    state: str | None = None
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=16384)
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=64)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[Any] | None = None
    creation_time: str | None = None


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _extensions(
    params: dict[str, str], strict: bool
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Split backend_parameters into resource and placement extensions.

    Keys are case-insensitive (TES 1.1). Unsupported keys are refused when strict, else
    dropped: TES says they must not be stored or returned. Also returns the supported keys.
    """
    known = {k.lower(): v for k, v in params.items() if k.lower() in BACKEND_PARAMETERS}
    unknown = sorted(k for k in params if k.lower() not in BACKEND_PARAMETERS)
    if unknown and strict:
        raise InvalidInput(
            f"unsupported backend_parameters {unknown} (backend_parameters_strict is set); "
            f"supported: {sorted(BACKEND_PARAMETERS)}"
        )
    res: dict[str, Any] = {}
    place: dict[str, Any] = {}
    acc: dict[str, Any] = {}
    try:
        for key, value in known.items():
            if key.startswith("accelerator_"):
                field = key.removeprefix("accelerator_")
                acc[field] = int(value) if field in ("count", "min_memory_gib") else value
            elif key == "time_limit_s":
                res["time_limit_s"] = int(value)
            elif key in ("regions", "regions_deny"):
                place[key] = _csv(value)
            elif key == "policy":
                place["policy"] = Policy(value)
            elif key == "max_price_per_card_hour":
                place[key] = Decimal(value)
            elif key == "priority":
                place["priority"] = int(value)
            elif key == "pool":
                place["pool"] = value
        if acc:
            res["accelerator"] = AcceleratorRequest(**acc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"backend_parameters accelerator_{where}: {first['msg']}") from None
    except (ValueError, InvalidOperation) as exc:
        raise InvalidInput(f"backend_parameters: {exc}") from None
    return res, place, known


def unsupported_warning(task: TesTask) -> str | None:
    """The system-log warning TES asks for when a task names backend_parameters this
    service does not support (they are dropped, not stored); None when there are none."""
    params = (task.resources.backend_parameters if task.resources else None) or {}
    unknown = sorted(k for k in params if k.lower() not in BACKEND_PARAMETERS)
    if not unknown:
        return None
    return (
        f"warning: unsupported backend_parameters ignored: {', '.join(unknown)} "
        f"(supported: {', '.join(sorted(BACKEND_PARAMETERS))})"
    )


def tes_to_spec(task: TesTask) -> TaskSpec:
    """Turn a TES task into our spec, validating every extension."""
    r = task.resources or TesResources()
    params = r.backend_parameters or {}
    ext_res, ext_place, known = _extensions(params, bool(r.backend_parameters_strict))
    try:
        resources = Resources(
            cpu_cores=r.cpu_cores or 1,
            ram_gb=r.ram_gb or 1.0,
            disk_gb=r.disk_gb,
            preemptible=r.preemptible,
            zones=r.zones or [],
            backend_parameters=known,
            backend_parameters_strict=bool(r.backend_parameters_strict),
            **ext_res,
        )
        return TaskSpec(
            name=task.name,
            description=task.description,
            executors=[Executor(**e.model_dump()) for e in task.executors],
            inputs=task.inputs or [],
            outputs=task.outputs or [],
            volumes=task.volumes or [],
            tags=task.tags or {},
            resources=resources,
            placement=Placement(**ext_place),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}") from None


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def task_to_tes(task: TaskOut, view: View) -> dict[str, Any]:
    """Render a task as a TES ``tesTask`` at the given view."""
    out: dict[str, Any] = {"id": task.id, "state": task.state.value}
    if view is View.MINIMAL or task.spec is None:
        return out
    spec = task.spec
    full = view is View.FULL
    inputs = [i.model_dump(exclude_none=True) for i in spec.inputs]
    if not full:
        for i in inputs:
            i.pop("content", None)
    resources = spec.resources.model_dump(
        exclude_none=True,
        include={
            "cpu_cores",
            "preemptible",
            "ram_gb",
            "disk_gb",
            "zones",
            "backend_parameters",
            "backend_parameters_strict",
        },
    )
    executors = [e.model_dump(exclude_none=True) for e in spec.executors]
    out.update(
        name=spec.name,
        description=spec.description,
        inputs=inputs,
        outputs=[o.model_dump(exclude_none=True) for o in spec.outputs],
        resources=resources,
        executors=executors,
        volumes=spec.volumes,
        tags=spec.tags,
        creation_time=_time(task.created_at),
    )
    logs = []
    by_attempt = {a.attempt: a for a in task.attempts or []}
    # One entry per attempt, as TES asks: also for an attempt lost before any executor ended
    # (its lease expired, its gateway handed it back), known from the timeline.
    events = task.events or []
    attempt_numbers = sorted(
        set(by_attempt)
        | ({task.attempt} if task.attempt else set())
        | {e.attempt for e in events if e.attempt > 0}
    )
    if not attempt_numbers and full and any(e.message.startswith("warning:") for e in events):
        attempt_numbers = [0]  # not started yet, but the submission left a warning to show
    for n in attempt_numbers:
        attempt = by_attempt.get(n)
        entry: dict[str, Any] = {
            "logs": [
                _drop_none(
                    {
                        "start_time": _time(e.start_time),
                        "end_time": _time(e.end_time),
                        "exit_code": e.exit_code,
                        **({"stdout": e.stdout or "", "stderr": e.stderr or ""} if full else {}),
                    }
                )
                # TES requires exit_code in an executor log: one appears once it has ended
                for e in (attempt.executors if attempt else [])
                if e.exit_code is not None
            ],
            "metadata": {"attempt": str(n), "pool": task.pool or ""},
            # TES outputFileLog; size_bytes is a string in the spec (int64 as text)
            "outputs": [
                {"url": o.url, "path": o.path, "size_bytes": str(o.size_bytes)}
                for o in (attempt.outputs if attempt else [])
            ],
        }
        if n == task.attempt:
            entry["start_time"] = _time(task.started_at)
            entry["end_time"] = _time(task.ended_at)
        if full:
            entry["metadata"].update(
                {f"sha256:{o.path}": o.sha256 for o in (attempt.outputs if attempt else [])}
            )
            # What happened before the first attempt (submission) is the first entry's.
            entry["system_logs"] = [
                f"{e.at.isoformat()} {e.state.value}: {e.message}"
                for e in events
                if e.attempt == n or (e.attempt == 0 and n == attempt_numbers[0])
            ]
        logs.append(_drop_none(entry))
    out["logs"] = logs
    return _drop_none(out)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """TES leaves unknown values out rather than sending null."""
    return {k: v for k, v in d.items() if v is not None}
