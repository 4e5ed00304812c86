"""GA4GH TES 1.1 under ``/ga4gh/tes/v1``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

import computenet
from computenet.model.task import INPUT_SCHEMES, TaskState
from computenet.node.api.deps import Runtime, User, owner_scope, payer
from computenet.node.api.native import known_models
from computenet.node.tasks import MAX_PAGE_SIZE, ListFilter, utcnow
from computenet.node.tes_map import (
    BACKEND_PARAMETERS,
    TesTask,
    task_to_tes,
    tes_to_spec,
    unsupported_warning,
)
from computenet.node.views import View
from computenet.store import tables as t
from computenet.tasks.transitions import log_line

router = APIRouter(prefix="/ga4gh/tes/v1", tags=["tes"])


@router.get("/service-info")
def service_info(rt: Runtime, request: Request) -> dict[str, Any]:
    """TES service-info, announcing our backend_parameters extensions."""
    s = rt.settings
    return {
        "id": f"org.computenet.{s.node_code}",
        "name": s.name,
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "ComputeNet node: a Compute Internet endpoint speaking GA4GH TES",
        "organization": {"name": "ComputeNet", "url": str(request.base_url)},
        "version": computenet.__version__,
        # URL schemes the gateways stage (docs/staging.md); inline `content` always works
        "storage": [f"{scheme}://" for scheme in INPUT_SCHEMES],
        "tesResources_backend_parameters": sorted(BACKEND_PARAMETERS),
    }


@router.post("/tasks")
def create_task(
    body: TesTask,
    rt: Runtime,
    p: User,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> dict[str, str]:
    """CreateTask; unsupported backend_parameters leave a warning in the system logs."""
    spec = tes_to_spec(body)
    known_models(spec, rt)
    tid, created = rt.tasks.submit(spec, p.owner, idempotency_key, payer(p))
    warning = unsupported_warning(body)
    if created and warning is not None:
        # A timeline note only: the task's state is the state machine's, not touched here.
        with rt.db.write() as s:
            row = s.get(t.Task, tid)
            if row is not None:
                log_line(s, tid, row.attempt, row.state, warning, utcnow())
    rt.monitor.task_submitted(tid, created)
    return {"id": tid}


@router.get("/tasks")
def list_tasks(
    rt: Runtime,
    p: User,
    view: View = View.MINIMAL,
    page_size: Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE)] = None,
    page_token: Annotated[str | None, Query(max_length=64)] = None,
    name_prefix: Annotated[str | None, Query(max_length=256)] = None,
    state: TaskState | None = None,
    tag_key: Annotated[list[str] | None, Query(max_length=64)] = None,
    tag_value: Annotated[list[str] | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """ListTasks with TES filters and pagination."""
    keys = tag_key or []
    values = tag_value or []
    tags = {k: (values[i] if i < len(values) else "") for i, k in enumerate(keys)}
    filt = ListFilter(name_prefix=name_prefix, state=state, tags=tags)
    page = rt.tasks.list(view, page_size, page_token, filt, owner_scope(p))
    out: dict[str, Any] = {"tasks": [task_to_tes(t, view) for t in page.tasks]}
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out


@router.get("/tasks/{task_id}")
def get_task(task_id: str, rt: Runtime, p: User, view: View = View.MINIMAL) -> dict[str, Any]:
    """GetTask at MINIMAL, BASIC or FULL view."""
    return task_to_tes(rt.tasks.get(task_id, view, owner_scope(p)), view)


@router.post("/tasks/{task_id}:cancel")
def cancel_task(task_id: str, rt: Runtime, p: User) -> dict[str, Any]:
    """CancelTask."""
    rt.tasks.cancel(task_id, owner_scope(p))
    return {}
