"""Usage signed by the node that ran a forwarded task: kept, and charged to the submitting
user, only when the signature holds and the charge adds up (issue 6: a tampered usage record
is rejected)."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from computenet.billing.settlement import consistent
from computenet.federation.keys import b64, canonical, root_identity
from computenet.federation.mirror import _record_usage
from computenet.model.task import TaskSpec
from computenet.node.tasks import TaskService, utcnow
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_billing import Charge
from fedproc import NOW

RECORD: dict[str, Any] = {
    "attempt": 1,
    "pool": "cn.52/gz/host",
    "cards": 0,
    "wall_s": "7200",
    "card_hours": "0",
    "cpu_core_hours": "4.000000000",
    "memory_gib_hours": "2.000000000",
    "charge": {
        "tier": "on_demand",
        "unit": "core_hour",
        "quantity": "4.000000000",
        "unit_price": "0.375",
        "amount": "1.500000000000",
        "currency": "CNY",
    },
}


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Database, str]:
    db = Database(sqlite_url(tmp_path))
    upgrade(db)
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    tid, _ = TaskService(db, "cn.31").submit(spec, "alice", tenant="acme")
    return db, tid


GZ = root_identity("cn.52", "http://gz", NOW)  # the node that ran the task


def _sign(record: dict[str, Any]) -> str:
    return b64(GZ.key.sign(canonical(record)))


def _receive(db: Database, tid: str, record: dict[str, Any], signature: str) -> None:
    owner = GZ.chain[-1].body
    with db.write() as s:
        _record_usage(s, owner, tid, {"record": record, "signature": signature}, utcnow())


def _counts(db: Database) -> tuple[int, int]:
    with db.read() as s:
        usage = s.scalar(select(func.count()).select_from(t.UsageRecord))
        charges = s.scalar(select(func.count()).select_from(Charge))
    return int(usage or 0), int(charges or 0)


def test_signed_usage_is_booked_for_the_submitting_tenant(origin: tuple[Database, str]) -> None:
    db, tid = origin
    _receive(db, tid, RECORD, _sign(RECORD))
    assert _counts(db) == (1, 1)
    with db.read() as s:
        charge = s.scalars(select(Charge)).one()
    assert (charge.tenant, charge.provider_prefix, charge.amount) == (
        "acme",
        "cn.52/gz",
        Decimal("1.5"),
    )


def test_a_tampered_record_is_rejected(origin: tuple[Database, str]) -> None:
    db, tid = origin
    signature = _sign(RECORD)
    cheaper = copy.deepcopy(RECORD)
    cheaper["charge"]["amount"] = "0.150000000000"  # changed after it was signed
    _receive(db, tid, cheaper, signature)
    assert _counts(db) == (0, 0)


def test_a_signed_charge_that_does_not_add_up_is_rejected(origin: tuple[Database, str]) -> None:
    db, tid = origin
    wrong = copy.deepcopy(RECORD)
    wrong["charge"]["amount"] = "15"  # signed, but 4 x 0.375 is 1.5
    _receive(db, tid, wrong, _sign(wrong))
    assert _counts(db) == (0, 0)


def test_a_negative_closing_charge_is_accepted_only_down_to_what_its_intervals_billed() -> None:
    """Issue 18: a replica's closing charge is its usage less what its intervals billed, so it
    may be a correction below zero, but never more than those intervals."""
    closing = {**RECORD["charge"], "quantity": "-0.5", "amount": "-0.1875"}
    assert not consistent(closing)  # no intervals to correct
    assert consistent({**closing, "net_of_interim": "0.5"})
    assert not consistent({**closing, "net_of_interim": "0.25"})
    assert not consistent({**closing, "net_of_interim": "0.5", "amount": "-0.2"})
