"""Metric definitions on hand-checked numbers, and `computenet sim` end to end."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computenet.cli.main import app
from computenet.sim.baselines import cheapest_first
from computenet.sim.engine import simulate
from computenet.sim.metrics import jain, percentile, summarize
from computenet.sim.topology import Topology
from computenet.sim.trace import Job

DATA = Path(__file__).with_name("data")


def test_jain_and_percentile() -> None:
    assert jain([2.0, 2.0, 2.0]) == 1.0
    assert jain([1.0, 0.0, 0.0, 0.0]) == 0.25  # one tenant gets everything: 1/n
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_summary_of_hand_checked_case(two_pools: Topology) -> None:
    jobs = [
        Job("j1", "x", 0, 2, {"slow-card": 100.0, "fast-card": 50.0}),
        Job("j2", "y", 10, 2, {"slow-card": 100.0, "fast-card": 50.0}),
    ]
    s = summarize(simulate(jobs, two_pools, cheapest_first(two_pools)))
    # j1: slow pool 0-100 (JCT 100, bound 50); j2: fast pool 10-60 (JCT 50, bound 50)
    assert s.mean_jct_h == pytest.approx(75 / 3600)
    assert s.mean_wait_h == 0
    assert s.jct_over_lower_bound == pytest.approx(75 / 50)
    assert s.makespan_h == pytest.approx(100 / 3600)
    # measured over the arrival window 0-10 s: the slow pool was full, the fast one idle
    assert s.pool_utilization == pytest.approx({"cn.31/a/slow": 1.0, "cn.31/a/fast": 0.0})
    assert s.utilization == pytest.approx(2 * 10 / (4 * 10))
    assert abs(s.cost - Decimal(2 * 100 + 8 * 50) / 3600) < Decimal("1e-20")
    assert s.jain_fairness == pytest.approx(jain([0.5, 1.0]))


def test_cli_sim_writes_table_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    trace = str(DATA / "gavel_sample.trace")
    throughputs = str(DATA / "gavel_throughputs_sample.json")
    args = ["sim", "--trace", trace, "--throughputs", throughputs, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--policies", "all"])
    assert result.exit_code == 0, result.output
    with (out / "summary.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["policy"] for r in table] == [
        *("balanced", "cheapest", "fastest", "greenest", "nearest"),
        *("random", "round-robin", "cheapest-first", "least-loaded", "first-fit"),
    ]
    assert all(r["jobs"] == "7" for r in table)
    for name in ("compare.png", "jct_cdf.png", "pool_utilization.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64" in (out / "index.html").read_text()
    assert (out / "trace.csv").read_text().startswith("job_id,tenant,arrival_s")
    assert "cheapest-first" in result.output


def test_cli_sim_csv_trace_and_policy_subset(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app,
        ["sim", "--trace", "synthetic:40", "--out", str(tmp_path / "a"), "--policies", "first-fit"],
    )
    assert first.exit_code == 0, first.output
    again = runner.invoke(
        app,
        [
            "sim",
            "--trace",
            str(tmp_path / "a" / "trace.csv"),
            "--out",
            str(tmp_path / "b"),
            "--policies",
            "first-fit",
        ],
    )
    assert again.exit_code == 0, again.output
    # the same jobs through the same policy give the same table
    assert (tmp_path / "a" / "summary.csv").read_text() == (
        tmp_path / "b" / "summary.csv"
    ).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trace", "synthetic:5", "--policies", "fastest-ever"], "unknown policy"),
        (["--trace", "/no/such.trace"], "trace /no/such.trace not found"),
        (["--trace", "synthetic:x"], "synthetic:N needs N"),
    ],
)
def test_cli_sim_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sim", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
