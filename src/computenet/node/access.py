"""Who may do what: roles (token kinds), their scopes, and which tasks a caller may see.

Roles are token kinds. ``admin`` is the platform admin; ``operator`` runs this node (every
task, providers, audit; it may not mint admin or operator tokens); ``user`` is a consumer,
who sees only its own tasks; ``provider`` is a provider's operator, who sees the work placed
on its own pools and may change nothing; ``gateway`` speaks only the gateway protocol.

Scopes are coarse, as in most APIs: ``read`` for GET, ``write`` for every other method,
``admin`` for operator endpoints. A token holds its role's scopes or fewer.

A principal is a (tenant, subject) pair, never a name alone: what it owns (tasks, datasets,
idempotency keys, reservations) is stored under its **owner key**, and what its organisation
holds together (secrets, budget, invoices, fair share) under its **account key**:

=====================  ===================  ===================
who                    owner key            account key
=====================  ===================  ===================
bob of tenant acme     ``acme/bob``         ``acme``
alice, no tenant       ``user:alice``       ``user:alice``
the admin, no tenant   ``admin:admin``      ``admin:admin``
tasks from node cn.31  ``federation:cn.31`` ``federation:cn.31``
=====================  ===================  ===================

Tenant names may hold neither ``/`` nor ``:``, so no two principals share a key: the same user
name under two tenants is two owners, and a user with no tenant whose name equals a tenant's
(``user:acme`` and ``acme``) gets nothing of that tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select

from computenet.errors import Forbidden, InvalidInput
from computenet.store import tables as t

Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])  # a query of any row shape

SCOPES = ("read", "write", "admin")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "operator": frozenset(SCOPES),
    "user": frozenset({"read", "write"}),
    "provider": frozenset({"read"}),
    "gateway": frozenset(),
    "enrol": frozenset(),
}
API_ROLES = ("admin", "operator", "user", "provider")  # roles that may call /api/v1 and TES
OPERATOR_ROLES = ("admin", "operator")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A tenant name: no "/" (which separates it from the subject in an owner key) and no ":"
# (which marks the keys of principals without a tenant).
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
_TENANT = re.compile(TENANT_PATTERN)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name; refuse it otherwise."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidInput(
            f"tenant {tenant!r} is not a valid tenant name (letters, digits and _.@-, "
            "no '/' or ':')"
        )
    return tenant


def owner_key(kind: str, subject: str, tenant: str | None) -> str:
    """The key a principal's tasks, datasets and reservations are stored under."""
    if tenant is None:
        return f"{kind}:{subject}"
    return f"{check_tenant(tenant)}/{subject}"


def account_key(kind: str, subject: str, tenant: str | None) -> str:
    """The key a principal's secrets, budget, invoices and fair share are kept under: its
    tenant, or (with none) the principal itself."""
    return owner_key(kind, subject, None) if tenant is None else check_tenant(tenant)


def scope_for_method(method: str) -> str:
    """The scope an API call needs: reads need ``read``, everything else ``write``."""
    return "read" if method.upper() in _READ_METHODS else "write"


def check_scopes(role: str, scopes: list[str] | None) -> frozenset[str]:
    """The scopes a new token of ``role`` gets: all of the role's, or a subset asked for."""
    allowed = ROLE_SCOPES.get(role)
    if allowed is None:
        raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLE_SCOPES)}")
    if scopes is None:
        return allowed
    asked = frozenset(scopes)
    if unknown := asked - frozenset(SCOPES):
        raise InvalidInput(f"unknown scope(s) {sorted(unknown)}; scopes are {', '.join(SCOPES)}")
    if extra := asked - allowed:
        raise InvalidInput(f"a {role} token cannot hold scope(s) {sorted(extra)}")
    return asked


def require_scope(role: str, scopes: frozenset[str], scope: str) -> None:
    """Refuse a call that needs ``scope`` when the token does not hold it."""
    if scope not in scopes:
        raise Forbidden(f"this {role} token lacks the {scope!r} scope")


@dataclass(frozen=True)
class Visibility:
    """Which tasks a caller may see: its own (``owner``), or those on its pools."""

    owner: str | None = None
    pool_prefix: str | None = None  # "<provider prefix>/": pools under that provider

    def allows(self, row: t.Task) -> bool:
        """Whether the caller may see this task."""
        if self.owner is not None and row.owner != self.owner:
            return False
        return self.pool_prefix is None or (row.pool_cpi or "").startswith(self.pool_prefix)

    def where(self, q: Q) -> Q:
        """``q`` narrowed to what the caller may see."""
        if self.owner is not None:
            q = q.where(t.Task.owner == self.owner)
        if self.pool_prefix is not None:
            q = q.where(t.Task.pool_cpi.startswith(self.pool_prefix, autoescape=True))
        return q


def visibility(role: str, subject: str) -> Visibility | None:
    """What a caller of ``role`` may see; ``None`` means every task on this node."""
    if role in OPERATOR_ROLES:
        return None
    if role == "provider":
        return Visibility(pool_prefix=subject + "/")
    return Visibility(owner=subject)
