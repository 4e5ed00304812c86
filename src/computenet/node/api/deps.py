"""Shared FastAPI dependencies: the runtime and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from computenet.node.auth import Principal
from computenet.node.runtime import NodeRuntime


async def runtime(request: Request) -> NodeRuntime:
    """The node runtime attached to the app."""
    rt: NodeRuntime = request.app.state.runtime
    return rt


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller, from its bearer token (401 when missing or wrong).

    Runs on the event loop: tokens are checked from a cache, so the rare store read is
    cheaper than a hop to the thread pool on every call.
    """
    rt: NodeRuntime = request.app.state.runtime
    p = rt.auth.check(authorization)
    request.state.principal = p  # for the audit log
    if rt.limiter is not None:
        rt.limiter.take(p.token_id)
    return p


async def user(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """A consumer or admin caller (gateway credentials are refused)."""
    p.require("admin", "user")
    return p


async def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """An admin caller."""
    p.require("admin")
    return p


async def gateway(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """A gateway caller; its subject is the gateway id."""
    p.require("gateway")
    return p


def owner_scope(p: Principal) -> str | None:
    """Whose tasks a caller may see: admins see all, users their own."""
    return None if p.kind == "admin" else p.subject


Runtime = Annotated[NodeRuntime, Depends(runtime)]
User = Annotated[Principal, Depends(user)]
Admin = Annotated[Principal, Depends(admin)]
Gateway = Annotated[Principal, Depends(gateway)]
