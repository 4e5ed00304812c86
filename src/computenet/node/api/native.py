"""The native REST API under ``/api/v1``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import computenet
from computenet.errors import InvalidInput
from computenet.model.catalog import load_catalog, normalize_name
from computenet.model.protocol import PROTOCOL_VERSION
from computenet.model.task import TaskSpec, TaskState
from computenet.node.api.deps import Admin, Runtime, User, owner_scope, payer
from computenet.node.runtime import NodeRuntime
from computenet.node.tasks import MAX_PAGE_SIZE, ListFilter
from computenet.node.views import PoolOut, TaskListOut, TaskOut, View, pool_out

router = APIRouter(prefix="/api/v1", tags=["native"])
MAX_WAIT_S = 60.0  # a long-poll on one task answers within this, even if nothing moved
# A long-poll is woken by each change of its task's state; it also looks again this often,
# the safety net for a wake-up that never comes (a change made by another replica of the node).
WAIT_RECHECK_S = 0.5


class NodeInfo(BaseModel):
    """Who this node is."""

    code: str
    level: str
    name: str
    version: str
    gateway_protocol: int
    scheduler_leader: bool  # whether this replica runs the scheduler now


class Submitted(BaseModel):
    """The id of a submitted task; ``created`` is false for a repeated idempotency key."""

    id: str
    created: bool


class CancelOut(BaseModel):
    """A task's state after a cancel request."""

    id: str
    state: TaskState


class ProviderIn(BaseModel):
    """Enrol a provider: its label becomes ``<node-code>/<label>``."""

    label: str = Field(min_length=1, max_length=63)
    name: str = Field(default="", max_length=256)


class ProviderOut(BaseModel):
    """An enrolled provider, and (once) its gateway enrolment token."""

    prefix: str
    name: str
    enrolment_token: str | None = None


class ResolveOut(BaseModel):
    """A CPI's resource record and the node that serves it (``cached``: answered from this
    node's resolution cache)."""

    cpi: str
    served_by: str
    record: dict[str, Any]
    cached: bool = False


@router.get("/node", response_model=NodeInfo)
def node_info(rt: Runtime, _p: User) -> NodeInfo:
    """This node's code, level and versions."""
    s = rt.settings
    return NodeInfo(
        code=s.node_code,
        level=s.level,
        name=s.name,
        version=computenet.__version__,
        gateway_protocol=PROTOCOL_VERSION,
        scheduler_leader=rt.leader.is_leader,
    )


def known_models(spec: TaskSpec, rt: NodeRuntime) -> None:
    """Refuse an accelerator model that neither the catalog nor any pool here names: such a
    task could only wait forever, and the name is most likely misspelled."""
    wanted = [spec.resources.accelerator, *(v.accelerator for v in spec.variants)]
    catalog = load_catalog()
    for acc in wanted:
        if acc is None or not acc.model or catalog.names(acc.model):
            continue
        folded = normalize_name(acc.model)
        declared = (pool_out(r).spec.accelerator for r in rt.dispatch.pool_rows())
        if not any(a is not None and folded in normalize_name(a.model) for a in declared):
            raise InvalidInput(catalog.unknown_model(acc.model) or acc.model)


@router.post("/tasks", response_model=Submitted, status_code=201)
def submit(
    spec: TaskSpec,
    rt: Runtime,
    p: User,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> Submitted:
    """Submit a task; send ``Idempotency-Key`` to make retries safe."""
    if spec.service is not None:
        raise InvalidInput(
            "'service' is set by the node's service controller only: deploy a service "
            "with POST /api/v1/services instead"
        )
    known_models(spec, rt)
    rt.secrets.require(payer(p), spec.secrets.values())
    tid, created = rt.tasks.submit(spec, p.owner, idempotency_key, payer(p))
    rt.monitor.task_submitted(tid, created)
    if not created:
        response.status_code = 200
    return Submitted(id=tid, created=created)


@router.get("/tasks", response_model=TaskListOut, response_model_exclude_none=True)
def list_tasks(
    rt: Runtime,
    p: User,
    view: View = View.BASIC,
    page_size: Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE)] = None,
    page_token: Annotated[str | None, Query(max_length=64)] = None,
    state: TaskState | None = None,
    name_prefix: Annotated[str | None, Query(max_length=256)] = None,
) -> TaskListOut:
    """Tasks, newest first."""
    filt = ListFilter(name_prefix=name_prefix, state=state)
    return rt.tasks.list(view, page_size, page_token, filt, owner_scope(p))


@router.get("/tasks/{task_id}", response_model=TaskOut, response_model_exclude_none=True)
async def get_task(
    task_id: str,
    rt: Runtime,
    p: User,
    view: View = View.FULL,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    state: TaskState | None = None,
) -> TaskOut:
    """One task with its timeline, logs and usage. With ``wait_s`` it is a long-poll: the
    answer comes once the task's state differs from ``state`` (without ``state``: once it is
    final), or when ``wait_s`` has passed, whichever is first."""
    scope = owner_scope(p)
    deadline = time.monotonic() + wait_s
    with rt.changes.tasks.watch(task_id) as changed:
        while True:
            mark = changed.mark()  # a change while we read wakes the wait below at once
            out = await run_in_threadpool(rt.tasks.get, task_id, view, scope)
            left = deadline - time.monotonic()
            moved = out.state.terminal or (state is not None and out.state is not state)
            if moved or left <= 0 or rt.draining:
                return out
            await changed.wait(min(left, WAIT_RECHECK_S), since=mark)


@router.post("/tasks/{task_id}/cancel", response_model=CancelOut)
def cancel_task(task_id: str, rt: Runtime, p: User) -> CancelOut:
    """Cancel a task; running work is stopped by its gateway."""
    return CancelOut(id=task_id, state=rt.tasks.cancel(task_id, owner_scope(p)))


@router.get("/pools", response_model=list[PoolOut])
def pools(rt: Runtime, _p: User) -> list[PoolOut]:
    """Every pool this node knows, with live state."""
    return [pool_out(r) for r in rt.dispatch.pool_rows()]


@router.get("/resolve/{cpi:path}", response_model=ResolveOut)
def resolve(cpi: str, rt: Runtime, _p: User) -> ResolveOut:
    """Resolve a CPI anywhere in the federation to its resource record."""
    return ResolveOut.model_validate(rt.federation.resolver.resolve(cpi))


@router.post("/providers", response_model=ProviderOut, status_code=201)
def enrol_provider(body: ProviderIn, rt: Runtime, _p: Admin) -> ProviderOut:
    """Enrol a provider and issue a one-time token for its gateway."""
    prefix, token = rt.enrol_provider(body.label, body.name)
    return ProviderOut(prefix=prefix, name=body.name or body.label, enrolment_token=token)


@router.get("/providers", response_model=list[ProviderOut], response_model_exclude_none=True)
def providers(rt: Runtime, _p: Admin) -> list[ProviderOut]:
    """Providers enrolled here."""
    return [ProviderOut(prefix=r.prefix, name=r.name) for r in rt.providers()]
