"""Replica tasks no service lists: submitted, then the node died (or the store failed)
before the controller recorded them in ``service_replicas``. Left alone, such a replica
would run (and bill) untracked; the controller adopts or cancels them (controller.py)."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.model.task import TaskSpec, TaskState
from computenet.store import tables as t
from computenet.store.tables_services import Service, ServiceReplica

_LIVE_STATES = [st.value for st in TaskState if not st.terminal]


def adopt_orphans(s: Session, node_code: str) -> tuple[int, list[str]]:
    """In ``s``: record each unlisted live replica task of a service deployed on this node
    (``node_code``) and still there, under its binding's name, version and index; returns
    how many it recorded and the ids of those whose service is gone (or has another owner),
    for the caller to cancel. Replicas forwarded here for another node's services are left
    alone: their home node tracks them."""
    recorded = select(ServiceReplica.task_id).where(ServiceReplica.task_id == t.Task.id)
    rows = s.scalars(
        select(t.Task).where(
            t.Task.state.in_(_LIVE_STATES),
            t.Task.name.like("service/%"),  # how ServiceSpec.replica_task names them
            ~recorded.exists(),
        )
    ).all()
    adopted, gone = 0, []
    for task in rows:
        try:
            binding = TaskSpec.model_validate(task.spec).service
        except ValidationError:
            continue
        if binding is None or binding.home_node != node_code:
            continue
        service = s.get(Service, binding.name)
        if service is None or service.owner != task.owner:
            gone.append(task.id)
            continue
        s.add(
            ServiceReplica(
                task_id=task.id,
                service=binding.name,
                version=binding.version,
                replica=binding.replica,
                live=1,
                created_at=task.created_at,
            )
        )
        adopted += 1
    return adopted, gone
