"""Shared FastAPI dependencies: the runtime and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from computenet.node.access import (
    API_ROLES,
    OPERATOR_ROLES,
    Visibility,
    require_scope,
    scope_for_method,
    visibility,
)
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
        if p.tenant is not None:
            rt.limiter.take_tenant(p.tenant)
    return p


async def user(request: Request, p: Annotated[Principal, Depends(principal)]) -> Principal:
    """Any API caller (not a gateway) whose token holds the scope this method needs."""
    p.require(*API_ROLES)
    require_scope(p.kind, p.scopes, scope_for_method(request.method))
    return p


async def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """A platform admin or node operator with the ``admin`` scope."""
    p.require(*OPERATOR_ROLES)
    require_scope(p.kind, p.scopes, "admin")
    return p


async def gateway(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """A gateway caller; its subject is the gateway id."""
    p.require("gateway")
    return p


def owner_scope(p: Principal) -> Visibility | None:
    """Which tasks a caller may see: operators all, users their own, providers the work on
    their pools."""
    return visibility(p.kind, p.subject if p.kind == "provider" else p.owner)


Runtime = Annotated[NodeRuntime, Depends(runtime)]
User = Annotated[Principal, Depends(user)]
Admin = Annotated[Principal, Depends(admin)]
Gateway = Annotated[Principal, Depends(gateway)]


def payer(p: Principal) -> str:
    """Who pays for what a caller submits (and holds its secrets): its tenant, or itself
    when it has none; never a bare name (see ``node/access.py``)."""
    return p.account
