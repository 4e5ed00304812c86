"""Task secrets under ``/api/v1/secrets``: store, list names, delete. Values never come back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from computenet.model.task import SECRET_NAME
from computenet.node.api.deps import Runtime, User, payer
from computenet.node.secrets import MAX_VALUE_BYTES

router = APIRouter(prefix="/api/v1", tags=["secrets"])
Name = Annotated[str, Path(pattern=SECRET_NAME)]


class SecretIn(BaseModel):
    """A secret's value."""

    model_config = ConfigDict(extra="forbid")
    value: Annotated[str, Field(min_length=1, max_length=MAX_VALUE_BYTES)]


class SecretOut(BaseModel):
    """A secret's name and when it last changed; never its value."""

    name: str
    updated_at: datetime


@router.put("/secrets/{name}", response_model=SecretOut)
def put_secret(name: Name, body: SecretIn, rt: Runtime, p: User) -> SecretOut:
    """Store or replace one of your (your tenant's) secrets."""
    return SecretOut(name=name, updated_at=rt.secrets.put(payer(p), name, body.value))


@router.get("/secrets", response_model=list[SecretOut])
def list_secrets(rt: Runtime, p: User) -> list[SecretOut]:
    """Your secrets' names."""
    return [SecretOut(name=r.name, updated_at=r.updated_at) for r in rt.secrets.names(payer(p))]


@router.delete("/secrets/{name}", status_code=204)
def delete_secret(name: Name, rt: Runtime, p: User) -> Response:
    """Forget one of your secrets."""
    rt.secrets.delete(payer(p), name)
    return Response(status_code=204)
