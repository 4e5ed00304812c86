"""Token administration under ``/api/v1/tokens``: mint, list, revoke.

Platform admins mint any role; node operators mint consumer (``user``) and provider
operator (``provider``) tokens. A token is shown once, when minted; only its hash is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from computenet.errors import Forbidden, InvalidInput, NotFound
from computenet.node.access import TENANT_PATTERN, check_scopes
from computenet.node.api.deps import Admin, Runtime, User
from computenet.node.auth import mint_token
from computenet.store import tables as t

router = APIRouter(prefix="/api/v1", tags=["tokens"])
Role = Literal["admin", "operator", "user", "provider"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@:/-]{0,127}$"


class TokenIn(BaseModel):
    """A token to mint: its role, whom it stands for, its organisation, scopes and lifetime."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    subject: Annotated[str, Field(pattern=_NAME)]  # a user name, or a provider prefix
    tenant: Annotated[str | None, Field(pattern=TENANT_PATTERN)] = None  # no '/' or ':'
    scopes: Annotated[list[str] | None, Field(max_length=3)] = None
    ttl_s: Annotated[float | None, Field(gt=0, le=10 * 365 * 86400)] = None
    name: Annotated[str | None, Field(max_length=128)] = None


class TokenOut(BaseModel):
    """A token's record; ``token`` (the secret) only in the answer that minted it."""

    id: str
    role: str
    subject: str
    tenant: str | None
    scopes: list[str]
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    token: str | None = None


def _out(row: t.Token, secret: str | None = None) -> TokenOut:
    return TokenOut(
        id=row.id,
        role=row.kind,
        subject=row.subject,
        tenant=row.tenant,
        scopes=sorted(check_scopes(row.kind, row.scopes)),
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        token=secret,
    )


@router.post("/tokens", response_model=TokenOut, status_code=201, response_model_exclude_none=True)
def mint(body: TokenIn, rt: Runtime, p: Admin) -> TokenOut:
    """Mint a token for a user, provider operator, operator or admin."""
    if body.role in ("admin", "operator") and p.kind != "admin":
        raise Forbidden(f"only a platform admin may mint {body.role} tokens")
    if body.role == "provider":
        with rt.db.read() as s:
            if s.get(t.Provider, body.subject) is None:
                raise InvalidInput(f"no provider {body.subject!r} on this node")
    scopes = check_scopes(body.role, body.scopes)
    secret, row = mint_token(
        rt.db,
        body.role,
        body.subject,
        body.ttl_s,
        tenant=body.tenant,
        scopes=scopes,
        name=body.name,
    )
    return _out(row, secret)


@router.get("/tokens", response_model=list[TokenOut], response_model_exclude_none=True)
def list_tokens(rt: Runtime, _p: Admin) -> list[TokenOut]:
    """Every API and gateway token, oldest first, without secrets."""
    return [_out(r) for r in rt.auth.tokens()]


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut, response_model_exclude_none=True)
def revoke(token_id: str, rt: Runtime, p: User) -> TokenOut:
    """Revoke a token. Anyone may revoke the token they call with; operators any token."""
    if p.token_id != token_id and p.kind not in ("admin", "operator"):
        raise NotFound(f"no token {token_id!r}")
    if p.kind == "operator" and p.token_id != token_id:
        target = rt.auth.token(token_id)
        if target is not None and target.kind == "admin":
            raise Forbidden("only a platform admin may revoke an admin token")
    return _out(rt.auth.revoke(token_id))
