"""Prices, budgets, invoices and earnings under ``/api/v1``.

Consumers see their own tenant's budget and invoices; provider operators their own
provider's earnings; operators everything. Amounts are strings, so no digit is lost.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from computenet.billing import statements
from computenet.billing.ledger import BudgetStatus
from computenet.billing.rating import DEFAULT_CURRENCY, Tier, Unit
from computenet.billing.settlement import settlement
from computenet.errors import NotFound
from computenet.node.access import OPERATOR_ROLES
from computenet.node.api.deps import Admin, Runtime, User, payer
from computenet.node.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["billing"])
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Period = Annotated[str, Path(pattern=r"^\d{4}-\d{2}$")]
Party = Annotated[str, Path(max_length=256)]


class PriceIn(BaseModel):
    """A price from a moment on (default: now)."""

    model_config = ConfigDict(extra="forbid")
    scope: Annotated[str, Field(min_length=1, max_length=256)]  # pool CPI, provider, or "*"
    tier: Tier = Tier.ON_DEMAND
    unit: Unit = Unit.CARD_HOUR
    price: Annotated[Decimal, Field(ge=0, lt=1_000_000, decimal_places=6)]
    currency: Currency = DEFAULT_CURRENCY
    effective_from: datetime | None = None


class PriceOut(PriceIn):
    """A price book entry."""

    id: int
    effective_from: datetime


class BudgetIn(BaseModel):
    """A tenant's monthly limit."""

    model_config = ConfigDict(extra="forbid")
    monthly_limit: Annotated[Decimal, Field(ge=0, lt=1_000_000, decimal_places=6)]
    currency: Currency = DEFAULT_CURRENCY
    warn_fraction: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.8")


class BudgetOut(BaseModel):
    """Where a tenant stands this month."""

    tenant: str
    currency: str
    monthly_limit: str
    period: str
    spent: str
    held: str
    left: str
    warning: bool


def _budget_out(b: BudgetStatus) -> BudgetOut:
    return BudgetOut(
        tenant=b.tenant,
        currency=b.currency,
        monthly_limit=str(b.monthly_limit),
        period=b.period,
        spent=str(b.spent),
        held=str(b.held),
        left=str(b.left),
        warning=b.warning,
    )


def _own(p: Principal, party: str, what: str) -> None:
    """Consumers reach only their tenant, providers only their provider: else 404."""
    if p.kind in OPERATOR_ROLES:
        return
    mine = p.subject if p.kind == "provider" else payer(p)
    if party != mine:
        raise NotFound(f"no {what} {party!r}")


@router.get("/prices", response_model=list[PriceOut])
def prices(rt: Runtime, _p: User) -> list[PriceOut]:
    """The price book, oldest entry first (pools' own offers are on ``/pools``)."""
    return [
        PriceOut(
            id=e.id,
            scope=e.scope,
            tier=Tier(e.tier),
            unit=Unit(e.unit),
            price=e.price,
            currency=e.currency,
            effective_from=e.effective_from,
        )
        for e in rt.ledger.price_book()
    ]


@router.post("/prices", response_model=PriceOut, status_code=201)
def add_price(body: PriceIn, rt: Runtime, _p: Admin) -> PriceOut:
    """Add a price book entry; charges already made keep the price they had."""
    e = rt.ledger.add_price(
        body.scope, body.tier, body.unit, body.price, body.currency, body.effective_from
    )
    return PriceOut(
        **body.model_dump(exclude={"effective_from"}), id=e.id, effective_from=e.effective_from
    )


@router.put("/budgets/{tenant}", response_model=BudgetOut)
def set_budget(tenant: Party, body: BudgetIn, rt: Runtime, _p: Admin) -> BudgetOut:
    """Set a tenant's monthly limit."""
    b = rt.ledger.set_budget(tenant, body.monthly_limit, body.currency, body.warn_fraction)
    return _budget_out(b)


@router.get("/budgets/{tenant}", response_model=BudgetOut)
def get_budget(tenant: Party, rt: Runtime, p: User) -> BudgetOut:
    """A tenant's budget: limit, spent this month, held by unfinished tasks, what is left."""
    _own(p, tenant, "budget")
    return _budget_out(rt.ledger.budget(tenant))


def _statement(st: statements.Statement, fmt: str) -> Response:
    if fmt == "csv":
        return PlainTextResponse(st.as_csv(), media_type="text/csv")
    return JSONResponse(st.as_dict())


@router.get("/invoices/{tenant}/{period}")
def get_invoice(
    tenant: Party, period: Period, rt: Runtime, p: User, format: Literal["json", "csv"] = "json"
) -> Response:
    """A tenant's invoice for a month, as JSON or CSV."""
    _own(p, tenant, "tenant")
    return _statement(statements.invoice(rt.db, tenant, period), format)


@router.get("/earnings/{provider:path}/{period}")
def get_earnings(
    provider: Party, period: Period, rt: Runtime, p: User, format: Literal["json", "csv"] = "json"
) -> Response:
    """A provider's earnings for a month, as JSON or CSV."""
    _own(p, provider, "provider")
    return _statement(statements.earnings(rt.db, provider, period), format)


@router.get("/settlements/{peer}/{period}")
def get_settlement(
    peer: Annotated[str, Path(max_length=140)],
    period: Period,
    rt: Runtime,
    _p: Admin,
    reconcile: bool = True,
) -> JSONResponse:
    """What this node and ``peer`` owe each other for a month; with ``reconcile``, the
    peer's own statement (asked for over the federation, signed) and every difference."""
    if not reconcile:
        mine = settlement(rt.db, rt.node_code, peer, period)
        return JSONResponse({"mine": mine.as_dict()})
    mine, theirs, problems = rt.federation.settle(peer, period)
    return JSONResponse(
        {
            "mine": mine.as_dict(),
            "theirs": theirs.as_dict(),
            "mismatches": problems,
            "agree": not problems,
        }
    )
