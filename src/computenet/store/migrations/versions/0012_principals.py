"""ownership keyed on (tenant, subject), not on a name alone

Revision ID: 0012
Revises: 0011

Before this revision a task's ``owner`` was the submitter's bare subject and ``tenant`` its
payer (the token's tenant, else the subject again); datasets and reservations kept the bare
subject; secrets, budgets, shares and charges kept the payer. So ``bob`` of two tenants was
one owner, and a user with no tenant named ``acme`` was tenant ``acme``. From now on owners
are ``<tenant>/<subject>`` or, with no tenant, ``<role>:<subject>`` (``user:alice``), and a
payer without a tenant is its owner key (see ``computenet/node/access.py``).

Old rows are rewritten to the principal that made them, read from the tokens table:

- a task or reservation whose tenant differs from its owner was made under that tenant;
- one whose tenant equals its owner (or is empty) was made by the user of that name under the
  tenant of that name when such a token exists, else by the user with no tenant;
- a bare name kept for an account (secrets, budgets, shares) stays a tenant when a token names
  that tenant, and becomes ``<role>:<name>`` when only a tenant-less token has that subject;
  a name no token explains is left as it was (a tenant);
- charges follow their task; datasets go to a principal with that subject under a tenant
  (the first tenant by name when several: an operator can hand a dataset over), else to the
  tenant-less one.

Where a name was truly shared (the case the old scheme could not tell apart), the rows go to
the tenant: the tenant-less user loses them rather than gaining a tenant's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ROLES = ("user", "operator", "admin")  # roles that own work, in order of preference


class _Tokens:
    """Who existed, from the tokens table."""

    def __init__(self, conn: sa.Connection) -> None:
        rows = conn.execute(
            sa.text("SELECT kind, subject, tenant FROM tokens WHERE kind IN :kinds").bindparams(
                sa.bindparam("kinds", expanding=True)
            ),
            {"kinds": list(_ROLES)},
        ).all()
        self.tenants = {r.tenant for r in rows if r.tenant}
        self.members = {(r.tenant, r.subject) for r in rows if r.tenant}
        self.solo: dict[str, str] = {}  # subject -> role of a token without tenant
        for r in sorted(rows, key=lambda r: _ROLES.index(r.kind)):
            if not r.tenant:
                self.solo.setdefault(r.subject, r.kind)

    def solo_key(self, name: str) -> str:
        return f"{self.solo.get(name, 'user')}:{name}"

    def owner(self, owner: str, tenant: str | None) -> tuple[str, str]:
        """The new (owner, payer) of a row made by ``owner`` paying as ``tenant``."""
        if tenant and tenant != owner:
            return f"{tenant}/{owner}", tenant
        if (owner, owner) in self.members:
            return f"{owner}/{owner}", owner
        key = self.solo_key(owner)
        return key, key

    def account(self, name: str) -> str:
        """The new key of an account kept under the bare ``name``."""
        if name in self.tenants or name not in self.solo:
            return name
        return self.solo_key(name)

    def dataset_owner(self, name: str) -> str:
        tenants = sorted(t for t, s in self.members if s == name)
        return f"{tenants[0]}/{name}" if tenants else self.solo_key(name)


def _rekey(conn: sa.Connection, table: str, column: str, new: dict[str, str]) -> None:
    for old, key in new.items():
        if old != key:
            conn.execute(
                sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old"),
                {"new": key, "old": old},
            )


def upgrade() -> None:
    """Rewrite every owner and account to the principal that made it."""
    conn = op.get_bind()
    who = _Tokens(conn)
    for table in ("tasks", "reservations"):
        rows = conn.execute(sa.text(f"SELECT id, owner, tenant FROM {table}")).all()
        for r in rows:
            if r.owner.startswith("federation:"):
                continue  # a task another node forwarded: its owner is that node already
            owner, payer = who.owner(r.owner, r.tenant)
            conn.execute(
                sa.text(f"UPDATE {table} SET owner = :o, tenant = :t WHERE id = :id"),
                {"o": owner, "t": payer, "id": r.id},
            )
    conn.execute(
        sa.text(
            "UPDATE charges SET owner = (SELECT owner FROM tasks WHERE tasks.id = charges.task_id),"
            " tenant = (SELECT COALESCE(tenant, owner) FROM tasks WHERE tasks.id = charges.task_id)"
            " WHERE EXISTS (SELECT 1 FROM tasks WHERE tasks.id = charges.task_id)"
        )
    )
    names = conn.execute(sa.text("SELECT DISTINCT owner FROM datasets")).scalars().all()
    _rekey(conn, "datasets", "owner", {n: who.dataset_owner(n) for n in names})
    for table, column in (("secrets", "scope"), ("budgets", "tenant"), ("tenant_shares", "tenant")):
        names = conn.execute(sa.text(f"SELECT DISTINCT {column} FROM {table}")).scalars().all()
        _rekey(conn, table, column, {n: who.account(n) for n in names})


def downgrade() -> None:
    """Owner keys back to bare subjects (two principals of one name merge again)."""
    conn = op.get_bind()
    for table in ("tasks", "reservations", "charges", "datasets"):
        for owner in conn.execute(sa.text(f"SELECT DISTINCT owner FROM {table}")).scalars():
            if owner.startswith("federation:"):
                continue
            bare = owner.split("/", 1)[1] if "/" in owner else owner.split(":", 1)[1]
            conn.execute(
                sa.text(f"UPDATE {table} SET owner = :b WHERE owner = :o"), {"b": bare, "o": owner}
            )
    for table, column in (
        ("tasks", "tenant"),
        ("reservations", "tenant"),
        ("charges", "tenant"),
        ("secrets", "scope"),
        ("budgets", "tenant"),
        ("tenant_shares", "tenant"),
    ):
        for name in conn.execute(sa.text(f"SELECT DISTINCT {column} FROM {table}")).scalars():
            if name and ":" in name and not name.startswith("federation:"):
                conn.execute(
                    sa.text(f"UPDATE {table} SET {column} = :b WHERE {column} = :o"),
                    {"b": name.split(":", 1)[1], "o": name},
                )
