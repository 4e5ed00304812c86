"""The node-to-node protocol under ``/federation/v1``: enrolment and signed messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from computenet.federation.enrol import EnrolIn, EnrolOut
from computenet.federation.envelope import FEDERATION_PROTOCOL, Envelope
from computenet.federation.keys import Cert
from computenet.node.api.deps import Admin, Runtime, User

router = APIRouter(prefix="/federation/v1", tags=["federation"])


class FedNodeOut(BaseModel):
    """Who this node is in the federation; its chain lets anyone check it."""

    code: str
    level: str
    url: str
    protocol: int
    chain: list[Cert]


class TokenIn(BaseModel):
    """Ask for a child enrolment token: the child gets code ``<this-code>.<label>``."""

    label: str = Field(min_length=1, max_length=16)
    level: str = "regional"
    ttl_s: float = Field(default=7 * 24 * 3600, gt=0, le=365 * 24 * 3600)


class TokenOut(BaseModel):
    """A one-time child enrolment token (shown once) and the code it allocates."""

    code: str
    enrol_token: str


@router.get("/ping")
async def ping(rt: Runtime) -> dict[str, str]:
    """A cheap public answer for children timing their round trip: code and region."""
    return {"code": rt.federation.ident.code, "region": rt.settings.region}


@router.get("/node", response_model=FedNodeOut)
def node(rt: Runtime) -> FedNodeOut:
    """This node's code, level, URL and certificate chain (public)."""
    ident = rt.federation.ident
    return FedNodeOut(
        code=ident.code,
        level=ident.level,
        url=ident.url,
        protocol=FEDERATION_PROTOCOL,
        chain=ident.chain,
    )


class IndexRowOut(BaseModel):
    """One pool in this node's federation index."""

    cpi: str
    owner: str
    via: str
    health: str
    seq: int
    record: dict[str, Any]


@router.get("/index", response_model=list[IndexRowOut])
def index(
    rt: Runtime,
    _p: User,
    owner: Annotated[str | None, Query(max_length=140)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[IndexRowOut]:
    """The pools this node knows across the federation (own, subtree, learned from above)."""
    return [
        IndexRowOut(
            cpi=r.cpi, owner=r.owner, via=r.via, health=r.health, seq=r.seq, record=r.record
        )
        for r in rt.federation.index.rows(owner, after, limit)
    ]


@router.post("/tokens", response_model=TokenOut, status_code=201)
def issue_token(body: TokenIn, rt: Runtime, _p: Admin) -> TokenOut:
    """Issue a one-time enrolment token for a child node (operator only)."""
    token, code = rt.federation.issue_token(body.label, body.level, body.ttl_s)
    return TokenOut(code=code, enrol_token=token)


@router.post("/enrol", response_model=EnrolOut)
def enrol(body: EnrolIn, rt: Runtime) -> EnrolOut:
    """A child node enrols with its token and new public key; it gets its certificate chain."""
    return rt.federation.enrol(body)


@router.post("/msg/{kind}")
def message(kind: str, env: Envelope, rt: Runtime) -> dict[str, Any]:
    """Any signed node-to-node message; the reply is signed too."""
    return rt.federation.handle(kind, env).model_dump(mode="json")
