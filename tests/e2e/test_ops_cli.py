"""Operator CLI against a real node: mint, use and revoke a token; read the audit log."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from nodeproc import admin_token, cli, free_port, start_node

pytestmark = pytest.mark.slow


def test_token_lifecycle_and_audit_from_the_cli(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port)
    try:
        admin = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": admin_token(node)}
        made = cli("token", "create", "user", "lee", "--tenant", "acme", "--json", env=admin)
        assert made.returncode == 0, made.stderr
        minted = json.loads(made.stdout)
        lee = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": minted["token"]}
        assert cli("list", env=lee).returncode == 0

        listed = cli("token", "list", "--json", env=admin)
        assert minted["id"] in listed.stdout and minted["token"] not in listed.stdout

        gone = cli("token", "revoke", minted["id"], env=admin)
        assert gone.returncode == 0 and "revoked" in gone.stdout
        refused = cli("list", env=lee)
        assert refused.returncode != 0 and "token revoked" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1

        audit = cli("audit", "--jsonl", env=admin)
        assert audit.returncode == 0, audit.stderr
        rows = [json.loads(line) for line in audit.stdout.splitlines()]
        calls = [(r["actor"], r["path"], r["status"]) for r in rows]
        assert ("admin:admin", "/api/v1/tokens", 201) in calls
        assert ("admin:admin", f"/api/v1/tokens/{minted['id']}/revoke", 200) in calls
        denied = cli("audit", env=lee)
        assert denied.returncode != 0
    finally:
        node.stop()


def test_prices_budget_and_invoice_from_the_cli(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = start_node(tmp_path / "node", port, "--cpus", "2", up=True)
    try:
        admin = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": admin_token(up)}
        made = cli("token", "create", "user", "lee", "--tenant", "acme", "--json", env=admin)
        lee = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": json.loads(made.stdout)["token"]}
        priced = cli("prices", "--set", "*", "--price", "3.6", "--unit", "core_hour", env=admin)
        assert priced.returncode == 0 and "3.6 CNY" in priced.stdout, priced.stderr
        done = cli("submit", "--wait", "--time-limit-s", "60", "--", "sleep", "0.3", env=lee)
        assert done.returncode == 0, done.stderr

        inv = cli("invoice", "acme", "--json", env=lee)
        assert inv.returncode == 0, inv.stderr
        [line] = json.loads(inv.stdout)["lines"]
        assert line["unit"] == "core_hour" and line["unit_price"] == "3.6"
        assert Decimal(line["amount"]) == Decimal(line["quantity"]) * Decimal("3.6") > 0
        assert "total:" in cli("invoice", "acme", env=lee).stdout
        assert cli("invoice", "acme", "--csv", env=lee).stdout.startswith("period,pool,")

        assert cli("budget", "acme", "--limit", "0.01", env=admin).returncode == 0
        refused = cli("submit", "--time-limit-s", "3600", "--", "true", env=lee)
        assert refused.returncode != 0 and "budget exceeded" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        shown = cli("budget", "acme", env=lee)
        assert "limit 0.01 CNY" in shown.stdout and "held 0, left 0.00" in shown.stdout
    finally:
        up.stop()


def _declare_gpu_pool(url: str, admin_token_: str) -> None:
    """Enrol a provider whose gateway declares a pool of 4 A100 cards (the protocol only:
    no GPU is needed to book a reservation on it)."""
    import httpx

    admin = {"Authorization": f"Bearer {admin_token_}"}
    r = httpx.post(f"{url}/api/v1/providers", json={"label": "gpu"}, headers=admin)
    enrol = {"token": r.json()["enrolment_token"], "name": "gpu-gw"}
    gw_token = httpx.post(f"{url}/gateway/v1/enrol", json=enrol).json()["credential"]
    acc = {"vendor": "nvidia", "model": "nvidia-a100-sxm-80g", "memory_mib": 81920, "count": 4}
    pool = {"label": "a100", "cpu_cores": 8, "memory_mib": 65536, "accelerator": acc}
    r = httpx.put(
        f"{url}/gateway/v1/pools",
        json={"pools": [{**pool, "price_per_card_hour": "12"}]},
        headers={"Authorization": f"Bearer {gw_token}"},
    )
    assert r.status_code == 200, r.text


def test_reserve_list_and_cancel_from_the_cli(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node(tmp_path / "node", port)
    try:
        token = admin_token(node)
        _declare_gpu_pool(url, token)
        admin = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": token}
        made = cli("token", "create", "user", "lee", "--tenant", "acme", "--json", env=admin)
        lee = {"COMPUTENET_URL": url, "COMPUTENET_TOKEN": json.loads(made.stdout)["token"]}

        booked = cli(
            "reserve", "create", "A100", "--cards", "2", "--start", "+1h", "--duration", "2h",
            "--json", env=lee,
        )  # fmt: skip
        assert booked.returncode == 0, booked.stderr
        rsv = json.loads(booked.stdout)
        # 2 cards x 2 h at the pool's 12 per card-hour (no reserved price in the book).
        assert rsv["pool"] == "cn/gpu/a100" and Decimal(rsv["cost"]) == 48
        listed = cli("reserve", "list", env=lee)
        assert listed.returncode == 0 and rsv["id"] in listed.stdout and "booked" in listed.stdout

        missing = cli("reserve", "create", "H100", "--start", "+1h", env=lee)
        assert missing.returncode != 0 and "no pool here has H100" in missing.stderr
        assert "Traceback" not in missing.stderr and len(missing.stderr.splitlines()) == 1
        bad = cli("reserve", "create", "A100", "--duration", "2 hours", env=lee)
        assert bad.returncode != 0 and "a duration is" in bad.stderr

        gone = cli("reserve", "cancel", rsv["id"], env=lee)
        assert gone.returncode == 0 and "cancelled" in gone.stdout, gone.stderr
    finally:
        node.stop()
