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
