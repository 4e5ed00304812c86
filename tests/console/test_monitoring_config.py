"""The shipped Prometheus alerting rules and Grafana dashboards (``deploy/``): promtool checks
and unit-tests the rules; every dashboard is well formed, every expression parses (promtool),
and every metric it or a rule names is one a live node or gateway really exports.

promtool comes from Debian's ``prometheus`` package: installed by scripts/prometheus-up.sh
when COMPUTENET_INSTALL_PROMETHEUS=1; missing, these tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from backend_testing import unavailable
from nodeproc import Proc, free_port, start_node
from polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
BUILTIN = {"up"}  # series Prometheus itself writes for every scrape target
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}


def promtool() -> str:
    """The promtool executable, installed first when allowed."""
    found = shutil.which("promtool")
    if found is None and os.environ.get("COMPUTENET_INSTALL_PROMETHEUS") == "1":
        subprocess.run([str(ROOT / "scripts" / "prometheus-up.sh")], check=False, timeout=900)
        found = shutil.which("promtool")
    if found is None:
        unavailable(
            "promtool not found (apt-get install prometheus, or COMPUTENET_INSTALL_PROMETHEUS=1)"
        )
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana variables substituted away)."""
    e = re.sub(r"\$\{?\w+\}?", "1m", expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", e)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(m.group(0))
    return names


def exported(text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers, samples or not."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total")
            names |= {base + s for s in SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _text(url: str) -> str:
    try:
        return httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return ""


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Series names from a live ``computenet up`` node and its local gateway."""
    base = tmp_path_factory.mktemp("scrape")
    port, gw_port = free_port(), free_port()
    metrics = ("--gateway-metrics-port", str(gw_port))
    proc: Proc = start_node(base / "node", port, "--cpus", "1", *metrics, up=True)
    try:
        node = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        gateway = wait_for(
            lambda: _text(f"http://127.0.0.1:{gw_port}/metrics"), 60, "gateway /metrics"
        )
        yield exported(node) | exported(gateway)
    finally:
        proc.stop()


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 13 rules found" in check.stdout
    tests = subprocess.run(
        [tool, "test", "rules", "alerts-test.yml"],
        cwd=RULES.parent, capture_output=True, text=True,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    names = {a for a, _ in rule_exprs()}
    wanted = (
        "NodeDown",
        "ChildSilent",
        "PoolUnhealthy",
        "QueueWaitOverEstimate",
        "BudgetNearlySpent",
    )
    assert {f"ComputeNet{w}" for w in wanted} <= names


def test_dashboards_are_well_formed() -> None:
    assert {p.name for p in DASHBOARDS} == {"computenet-node.json", "computenet-gateway.json"}
    for path in DASHBOARDS:
        d: dict[str, Any] = json.loads(path.read_text())
        assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
        assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "instance"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and len(ids) >= 8
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, (path.name, p["title"])
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, f"{path.name}: {p['title']} overlaps another panel"
            cells |= mine
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each dashboard query, written as a recording rule."""
    tool = promtool()
    exprs = dashboard_exprs()

    def concrete(e: str) -> str:  # Grafana's variables, as Grafana would fill them in
        return e.replace('=~"$instance"', '=~".*"').replace("$__rate_interval", "5m")

    records = [
        {"record": f"computenet:dashboard_{i}", "expr": concrete(e)}
        for i, (_, e) in enumerate(exprs)
    ]
    rules = {"groups": [{"name": "dashboards", "rules": records}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout


def test_metric_names_are_ones_the_node_and_gateway_export(scraped: set[str]) -> None:
    assert "computenet_tasks_submitted_total" in scraped
    assert "computenet_gateway_backend_up" in scraped
    unknown = {
        (where, name)
        for where, expr in dashboard_exprs() + rule_exprs()
        for name in metric_names(expr)
        if name not in scraped and name not in BUILTIN
    }
    assert unknown == set()
    # The parser finds names at all (a regex that found nothing would pass the check above).
    assert metric_names('sum by (le) (rate(computenet_queue_wait_seconds_bucket{a="b"}[5m]))') == {
        "computenet_queue_wait_seconds_bucket"
    }
    assert metric_names("a_ratio >= on(instance) b_ratio and up == 0") == {
        "a_ratio",
        "b_ratio",
        "up",
    }
