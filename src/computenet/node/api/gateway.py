"""The gateway protocol under ``/gateway/v1``."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from computenet.model.protocol import (
    DeclarePools,
    DeclareReply,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    LeaseReply,
    LeaseRequest,
    ReleaseReply,
    ReleaseRequest,
    ReportReply,
    TaskReport,
)
from computenet.node.api.deps import Gateway, Runtime
from computenet.node.auth import new_token

router = APIRouter(prefix="/gateway/v1", tags=["gateway"])


@router.post("/enrol", response_model=EnrolReply)
def enrol(body: EnrolRequest, rt: Runtime) -> EnrolReply:
    """Trade a one-time enrolment token for a gateway identity and credential."""
    prefix = rt.auth.redeem_enrolment(body.token)
    gid = rt.dispatch.register_gateway(prefix, body.name)
    credential = new_token(rt.db, "gateway", gid)
    return EnrolReply(
        gateway_id=gid, provider_prefix=prefix, credential=credential, node_code=rt.node_code
    )


@router.put("/pools", response_model=DeclareReply)
def declare(body: DeclarePools, rt: Runtime, gw: Gateway) -> DeclareReply:
    """Declare the gateway's pools; their CPIs are allocated inside its provider prefix."""
    cpis = rt.dispatch.declare_pools(gw.subject, body)
    s = rt.settings
    return DeclareReply(cpis=cpis, heartbeat_s=s.heartbeat_s, lease_ttl_s=s.lease_ttl_s)


@router.post("/heartbeat", response_model=HeartbeatReply)
def heartbeat(body: Heartbeat, rt: Runtime, gw: Gateway) -> HeartbeatReply:
    """Liveness, live pool state, lease renewal, and the gateway's measured RTT."""
    reply = rt.dispatch.heartbeat(gw.subject, body)
    rt.monitor.heartbeat(gw.subject, body, reply)
    return reply


@router.get("/ping")
async def ping() -> dict[str, bool]:
    """A cheap answer gateways time to measure their round trip to this node."""
    return {"ok": True}


@router.post("/lease", response_model=LeaseReply)
async def lease(body: LeaseRequest, rt: Runtime, gw: Gateway) -> LeaseReply:
    """Long-poll for tasks placed on this gateway's pools."""
    deadline = time.monotonic() + body.wait_s
    while True:
        seen = rt.changes.placed.mark()  # a placement while we look wakes the wait at once
        tasks = await run_in_threadpool(rt.dispatch.lease, gw.subject, body.max_tasks)
        left = deadline - time.monotonic()
        if tasks or left <= 0 or rt.draining:
            return LeaseReply(tasks=await run_in_threadpool(rt.monitor.traces, tasks))
        # Woken by any placement; the timeout bounds a missed wake-up.
        await rt.changes.placed.wait(min(left, 1.0), since=seen)
        await asyncio.sleep(0)


@router.post("/tasks/{task_id}/release", response_model=ReleaseReply)
def release(task_id: str, body: ReleaseRequest, rt: Runtime, gw: Gateway) -> ReleaseReply:
    """Hand a leased task back to be placed elsewhere (the backend cannot run it)."""
    return ReleaseReply(state=rt.dispatch.release(gw.subject, task_id, body.lease_id, body.reason))


@router.post("/tasks/{task_id}/report", response_model=ReportReply)
def report(task_id: str, body: TaskReport, rt: Runtime, gw: Gateway) -> ReportReply:
    """State, logs and usage of a leased task."""
    reply = rt.dispatch.report(gw.subject, task_id, body)
    rt.monitor.report(task_id, body)
    return reply
