"""Advance reservations under ``/api/v1/reservations``.

Consumers book, see and cancel their own tenant's; provider operators see those on their
own pools; operators see and cancel all. Amounts are strings, so no digit is lost.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from computenet.billing.reservations import ReservationRequest
from computenet.errors import Forbidden, NotFound
from computenet.node.access import OPERATOR_ROLES
from computenet.node.api.deps import Runtime, User, payer
from computenet.node.auth import Principal
from computenet.store.tables_billing import Reservation

router = APIRouter(prefix="/api/v1", tags=["billing"])
ReservationId = Annotated[str, Path(pattern=r"^rsv-[0-9A-Z]{26}$")]


class ReservationIn(BaseModel):
    """``cards`` of ``model`` (a catalog id or a family such as ``A100``) for a window: give
    ``ends_at`` or ``duration_s``; optionally a region (GB/T 2260 prefix) or one pool."""

    model_config = ConfigDict(extra="forbid")
    model: Annotated[str, Field(min_length=1, max_length=64)]
    cards: Annotated[int, Field(ge=1, le=10_000)]
    starts_at: datetime
    ends_at: datetime | None = None
    duration_s: Annotated[int | None, Field(ge=1, le=31 * 86400)] = None
    region: Annotated[str | None, Field(max_length=6)] = None
    pool: Annotated[str | None, Field(max_length=256)] = None

    @model_validator(mode="after")
    def _window(self) -> ReservationIn:
        if (self.ends_at is None) == (self.duration_s is None):
            raise ValueError("give exactly one of ends_at and duration_s")
        return self

    def request(self) -> ReservationRequest:
        """The booking this asks for."""
        end = self.ends_at or self.starts_at + timedelta(seconds=self.duration_s or 0)
        return ReservationRequest(
            self.model, self.cards, self.starts_at, end, self.region, self.pool
        )


class ReservationOut(BaseModel):
    """A reservation; ``cost`` is the whole window's at ``unit_price`` per card-hour."""

    id: str
    tenant: str
    owner: str
    pool: str
    model: str
    cards: int
    starts_at: datetime
    ends_at: datetime
    state: str
    unit_price: str
    currency: str
    cost: str
    created_at: datetime


def _out(r: Reservation) -> ReservationOut:
    return ReservationOut(
        id=r.id,
        tenant=r.tenant,
        owner=r.owner,
        pool=r.pool_cpi,
        model=r.model,
        cards=r.cards,
        starts_at=r.starts_at,
        ends_at=r.ends_at,
        state=r.state,
        unit_price=str(r.unit_price),
        currency=r.currency,
        cost=str(r.max_charge),
        created_at=r.created_at,
    )


def _tenant_scope(p: Principal) -> str | None:
    """Operators reach every reservation, anyone else their own tenant's."""
    return None if p.kind in OPERATOR_ROLES else payer(p)


@router.post("/reservations", response_model=ReservationOut, status_code=201)
def book(body: ReservationIn, rt: Runtime, p: User) -> ReservationOut:
    """Reserve cards for a window; its cost is held against the tenant's budget (402 when
    it does not fit) and charged when the window ends."""
    if p.kind == "provider":
        raise Forbidden("provider operators cannot reserve capacity; use a consumer token")
    return _out(rt.reservations.book(body.request(), p.owner, payer(p)))


@router.get("/reservations", response_model=list[ReservationOut])
def listing(rt: Runtime, p: User) -> list[ReservationOut]:
    """Reservations, newest first: the caller's tenant's (or, for a provider operator, those
    on its pools; for operators, all)."""
    if p.kind == "provider":
        return [_out(r) for r in rt.reservations.listing(None, p.subject + "/")]
    return [_out(r) for r in rt.reservations.listing(_tenant_scope(p))]


@router.get("/reservations/{rid}", response_model=ReservationOut)
def get(rid: ReservationId, rt: Runtime, p: User) -> ReservationOut:
    """One reservation."""
    if p.kind == "provider":
        r = rt.reservations.get(rid, None)
        if not r.pool_cpi.startswith(p.subject + "/"):
            raise NotFound(f"no reservation {rid!r}")
        return _out(r)
    return _out(rt.reservations.get(rid, _tenant_scope(p)))


@router.delete("/reservations/{rid}", response_model=ReservationOut)
def cancel(rid: ReservationId, rt: Runtime, p: User) -> ReservationOut:
    """Cancel: free before the window starts; during it, it ends now and is charged for the
    time it held the cards; 409 once it has ended."""
    if p.kind == "provider":
        raise NotFound(f"no reservation {rid!r}")
    return _out(rt.reservations.cancel(rid, _tenant_scope(p)))
