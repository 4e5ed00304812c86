"""Ledger benchmark: usage records (with their charges) written per second, and the time to
produce a month's invoices over 1,000,000 charge records.

Phase 1 writes ``--records`` usage records the way the dispatcher does when a gateway
reports a finished task: one transaction each, holding the usage record and its charge (price
lookup, exact Decimal product, budget update). Phase 2 fills the ledger with ``--charges``
charge rows for one month spread over ``--tenants`` tenants (bulk insert, not timed as
throughput), then times producing every tenant's invoice for that month and checks that the
invoices add up to the total of the rows, exactly. SQLite in a temporary directory by
default; ``--db-url`` for PostgreSQL. See bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert

from computenet.billing import statements
from computenet.billing.ledger import Ledger
from computenet.model.pool import PoolSpec
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_billing import Charge

POOL = "cn/acme/a100"
PERIOD = "2026-11"


def setup(db: Database, n_tasks: int) -> None:
    """One provider, gateway and pool, and ``n_tasks`` finished tasks to bill."""
    now = datetime.now(UTC)
    spec = PoolSpec.model_validate(
        {
            "label": "a100",
            "cpu_cores": 64,
            "memory_mib": 512 * 1024,
            "price_per_card_hour": "7.5",
            "accelerator": {
                "vendor": "nvidia",
                "model": "nvidia-a100-sxm-80g",
                "count": 8,
                "memory_mib": 81920,
            },
        }
    )
    with db.write() as s:
        s.add(t.Provider(prefix="cn/acme", name="acme", created_at=now))
        s.flush()
        s.add(t.Gateway(id="gw1", provider_prefix="cn/acme", name="gw", created_at=now))
        s.flush()
        s.add(
            t.Pool(
                cpi=POOL,
                provider_prefix="cn/acme",
                gateway_id="gw1",
                spec=spec.model_dump(mode="json"),
                health="HEALTHY",
                updated_at=now,
            )
        )
    rows = [
        {
            "id": f"cn-bench-{i:08d}",
            "seq": i + 1,
            "owner": f"user{i % 100}",
            "tenant": f"tenant{i % 100}",
            "state": "COMPLETE",
            "spec": {"executors": [{"command": ["true"]}]},
            "priority": 0,
            "cpu_cores": 8,
            "memory_mib": 65536,
            "accelerators": 1,
            "attempt": 1,
            "pool_cpi": POOL,
            "reason": "",
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "started_at": now,
            "ended_at": now,
            "tags": {},
        }
        for i in range(n_tasks)
    ]
    with db.write() as s:
        s.execute(insert(t.Task), rows)


def write_usage(db: Database, ledger: Ledger, n: int) -> list[float]:
    """Write ``n`` usage records with their charges, one transaction each; latencies (s)."""
    lat = []
    rng = random.Random(1)
    for i in range(n):
        began = time.perf_counter()
        now = datetime.now(UTC)
        with db.write() as s:
            task = s.get(t.Task, f"cn-bench-{i:08d}")
            assert task is not None
            wall = Decimal(rng.randint(1, 10**7)).scaleb(-3)
            usage = t.UsageRecord(
                task_id=task.id,
                attempt=1,
                pool_cpi=POOL,
                accelerator_model="nvidia-a100-sxm-80g",
                cards=1,
                wall_s=wall,
                card_hours=(wall / 3600).quantize(Decimal("1E-9")),
                cpu_core_hours=(wall * 8 / 3600).quantize(Decimal("1E-9")),
                memory_gib_hours=(wall * 64 / 3600).quantize(Decimal("1E-9")),
                pflops_hours_fp16=None,
                created_at=now,
            )
            s.add(usage)
            ledger.charge(s, task, usage, now)
        lat.append(time.perf_counter() - began)
    return lat


def fill(db: Database, n: int, tenants: int) -> Decimal:
    """Bulk-insert ``n`` charges of one month; return their exact total."""
    rng = random.Random(2)
    now = datetime.now(UTC)
    total = Decimal(0)
    chunk: list[dict[str, object]] = []
    for i in range(n):
        qty = Decimal(rng.randint(1, 10**12)).scaleb(-9)
        price = Decimal(rng.choice([750, 1230, 455, 99])).scaleb(-2)
        amt = qty * price
        total += amt
        chunk.append(
            {
                "task_id": f"fill-{i}",
                "attempt": 1,
                "tenant": f"t{i % tenants}",
                "owner": "u",
                "pool_cpi": POOL,
                "provider_prefix": "cn/acme",
                "tier": "on_demand",
                "unit": "card_hour",
                "quantity": qty,
                "unit_price": price,
                "price_entry_id": None,
                "amount": amt,
                "currency": "CNY",
                "period": PERIOD,
                "created_at": now,
            }
        )
        if len(chunk) == 20_000 or i == n - 1:
            with db.write() as s:
                s.execute(insert(Charge), chunk)
            chunk = []
    return total


def main() -> int:
    """Run both phases and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000, help="usage records to write")
    ap.add_argument("--charges", type=int, default=1_000_000, help="charges in the month")
    ap.add_argument("--tenants", type=int, default=1000, help="tenants to invoice")
    ap.add_argument("--db-url", help="an empty database instead of a temporary SQLite file")
    args = ap.parse_args()
    if min(args.records, args.charges, args.tenants) < 1:
        ap.error("--records, --charges and --tenants must be positive")
    with tempfile.TemporaryDirectory(prefix="cn-ledger-") as tmp:
        db = Database(args.db_url or sqlite_url(Path(tmp)))
        upgrade(db)
        setup(db, args.records)
        ledger = Ledger(db)
        print(f"store: {db.url.get_backend_name()}")

        began = time.perf_counter()
        lat = sorted(write_usage(db, ledger, args.records))
        took = time.perf_counter() - began
        p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
        print(
            f"usage records + charges written: {args.records} in {took:.2f} s = "
            f"{args.records / took:.0f}/s (one transaction each; p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, mean {statistics.fmean(lat) * 1000:.2f} ms)"
        )

        began = time.perf_counter()
        total = fill(db, args.charges, args.tenants)
        print(
            f"filled {args.charges} charges for {args.tenants} tenants in "
            f"{time.perf_counter() - began:.1f} s (bulk insert, setup only)"
        )

        began = time.perf_counter()
        invoiced = Decimal(0)
        lines = 0
        for i in range(args.tenants):
            st = statements.invoice(db, f"t{i}", PERIOD)
            invoiced += st.totals.get("CNY", Decimal(0))
            lines += len(st.lines)
        took = time.perf_counter() - began
        print(
            f"month's invoices: {args.tenants} invoices ({lines} lines) over {args.charges} "
            f"charges in {took:.2f} s ({args.charges / took:,.0f} records/s)"
        )
        ok = invoiced == total
        print(
            f"exact: invoices total {invoiced} CNY, rows total {total} CNY: "
            + ("equal" if ok else "MISMATCH")
        )
        db.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
