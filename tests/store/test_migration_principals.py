"""Migration 0012 on a store with old rows: ownership moves from bare names to (tenant,
subject) principals, and each old row ends with the principal that made it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select

from computenet.node.access import visibility
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import alembic_config
from computenet.store.tables_billing import Budget, Charge, Reservation
from computenet.store.tables_sched import Dataset, ShareSetting
from computenet.store.tables_secrets import Secret
from pg import fresh_database, require_postgres

NOW = datetime(2026, 11, 1, tzinfo=UTC)
# (token id, kind, subject, tenant): who existed before the upgrade.
TOKENS = [
    ("tk-bob-acme", "user", "bob", "acme"),
    ("tk-bob-globex", "user", "bob", "globex"),
    ("tk-alice", "user", "alice", None),
    ("tk-globex-solo", "user", "globex", None),  # a user with no tenant named like a tenant
    ("tk-admin", "admin", "admin", None),
]
# (task id, old owner, old tenant = payer) -> new (owner, tenant)
TASKS = {
    ("cn-1", "bob", "acme"): ("acme/bob", "acme"),
    ("cn-2", "bob", "globex"): ("globex/bob", "globex"),
    ("cn-3", "alice", "alice"): ("user:alice", "user:alice"),
    ("cn-4", "globex", "globex"): ("user:globex", "user:globex"),
    ("cn-5", "admin", "admin"): ("admin:admin", "admin:admin"),
    ("cn-6", "alice", None): ("user:alice", "user:alice"),  # from before tenancy
    ("cn-7", "federation:cn.31", None): ("federation:cn.31", None),
}


def _task(tid: str, owner: str, tenant: str | None, seq: int) -> dict[str, object]:
    return {
        "id": tid,
        "seq": seq,
        "owner": owner,
        "client_key": f"key-{tid}",
        "name": None,
        "state": "COMPLETE",
        "spec": {"executors": [{"command": ["true"]}]},
        "priority": 0,
        "cpu_cores": 1,
        "memory_mib": 256,
        "accelerators": 0,
        "attempt": 1,
        "reason": "",
        "cancel_requested": False,
        "created_at": NOW,
        "updated_at": NOW,
        "tags": {},
        "tenant": tenant,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        (tmp_path / "node").mkdir()
        return sqlite_url(tmp_path / "node")
    return fresh_database(require_postgres())


def _old_store(url: str) -> None:
    db = Database(url)
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
    with db.write() as s:
        for tid, kind, subject, tenant in TOKENS:
            s.execute(
                insert(t.Token),
                {
                    "id": tid,
                    "token_hash": tid,
                    "kind": kind,
                    "subject": subject,
                    "created_at": NOW,
                    "tenant": tenant,
                },
            )
        for seq, (tid, owner, tenant) in enumerate(TASKS, 1):
            s.execute(insert(t.Task), _task(tid, owner, tenant, seq))
        money = {"currency": "CNY", "unit_price": Decimal(1), "price_entry_id": None}
        for tid, owner, tenant in [("cn-1", "bob", "acme"), ("cn-3", "alice", "alice")]:
            # A Core insert of the columns charges had at 0011 (the ORM class has more now).
            s.execute(
                insert(Charge.__table__),
                {
                    "task_id": tid,
                    "attempt": 1,
                    "tenant": tenant,
                    "owner": owner,
                    "pool_cpi": "cn/p/h",
                    "provider_prefix": "cn/p",
                    "tier": "on_demand",
                    "unit": "core_hour",
                    "quantity": Decimal(1),
                    "amount": Decimal(1),
                    "period": "2026-11",
                    "created_at": NOW,
                    **money,
                },
            )
        s.add(
            Reservation(
                id="r-1",
                tenant="globex",
                owner="globex",
                pool_cpi="cn/p/h",
                provider_prefix="cn/p",
                model="x",
                cards=1,
                starts_at=NOW,
                ends_at=NOW,
                state="booked",
                max_charge=Decimal(1),
                created_at=NOW,
                **money,
            )
        )
        for scope in ("acme", "globex", "alice"):
            s.add(Secret(scope=scope, name="tok", ciphertext=f"ct-{scope}", updated_at=NOW))
        for tenant in ("acme", "alice", "nobody-known"):
            s.add(
                Budget(
                    tenant=tenant,
                    currency="CNY",
                    monthly_limit=Decimal(10),
                    warn_fraction=Decimal("0.8"),
                    period="2026-11",
                    spent=Decimal(0),
                    updated_at=NOW,
                )
            )
        s.add(ShareSetting(tenant="alice", weight=2.0, quota_cards=None, updated_at=NOW))
        for name, owner in (("genome", "bob"), ("weather", "alice")):
            s.add(
                Dataset(
                    name=name,
                    size_bytes=1,
                    regions=["11"],
                    description="",
                    owner=owner,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    db.engine.dispose()


def test_upgrade_keeps_old_rows_owned_by_the_principal_that_made_them(
    tmp_path: Path, db_url: str
) -> None:
    _old_store(db_url)
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path / "node", node_code="cn", db_url=db_url))
    rt.bootstrap()  # upgrades the store, as every start does
    with rt.db.read() as s:
        tasks = {r.id: (r.owner, r.tenant) for r in s.scalars(select(t.Task))}
        charges = {r.task_id: (r.owner, r.tenant) for r in s.scalars(select(Charge))}
        [rsv] = s.scalars(select(Reservation))
        secrets = {r.scope: r.ciphertext for r in s.scalars(select(Secret))}
        budgets = {r.tenant for r in s.scalars(select(Budget))}
        shares = {r.tenant for r in s.scalars(select(ShareSetting))}
        datasets = {r.name: r.owner for r in s.scalars(select(Dataset))}
    assert tasks == {tid: new for (tid, _o, _t), new in TASKS.items()}
    assert charges == {"cn-1": ("acme/bob", "acme"), "cn-3": ("user:alice", "user:alice")}
    # Owner and payer "globex": no user "globex" of tenant globex ever existed, so the
    # tenant-less user made it.
    assert (rsv.owner, rsv.tenant) == ("user:globex", "user:globex")
    # Secrets kept under a tenant's name stay the tenant's, even where a tenant-less user has
    # that name (the old scheme could not tell them apart: the tenant keeps them).
    assert secrets == {"acme": "ct-acme", "globex": "ct-globex", "user:alice": "ct-alice"}
    assert budgets == {"acme", "user:alice", "nobody-known"}
    assert shares == {"user:alice"}
    assert datasets == {"genome": "acme/bob", "weather": "user:alice"}
    # The two bobs are two owners now: each sees only its own task.
    acme_bob = visibility("user", "acme/bob")
    assert acme_bob is not None
    assert [x.id for x in rt.tasks.list(scope=acme_bob).tasks] == ["cn-1"]
    rt.db.engine.dispose()
