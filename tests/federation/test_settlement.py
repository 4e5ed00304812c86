"""Issue 6, must-show 3: two regional nodes with forwarded work in both directions; their
settlement statements agree line by line and net to zero."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fedproc import Member, start_member, stop_all, wait_for
from nodeproc import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Member]]:
    base = tmp_path_factory.mktemp("settle")
    members: dict[str, Member] = {}
    try:
        members["national"] = start_member(base, "national", None, "", "national", "11")
        nat = members["national"]
        members["shanghai"] = start_member(
            base, "shanghai", nat, "31", "regional", "31", price_per_core_hour="1.25"
        )
        members["guizhou"] = start_member(
            base, "guizhou", nat, "52", "regional", "52", price_per_core_hour="0.8"
        )
        for m in members.values():
            wait_for(
                f"{m.name} knows all three pools",
                lambda m=m: len(m.get("/federation/v1/index")) == 3,  # type: ignore[misc]
            )
        yield members
    finally:
        stop_all(members)


def _run_at(submitter: Member, region: str, n: int) -> list[str]:
    spec = {"executors": [{"command": ["sleep", "0.2"]}], "placement": {"regions": [region]}}
    ids = [submitter.post("/api/v1/tasks", spec)["id"] for _ in range(n)]
    for tid in ids:
        wait_for(
            f"{tid} done and its charge back at {submitter.name}",
            lambda tid=tid: (  # type: ignore[misc]
                (t := submitter.get(f"/api/v1/tasks/{tid}"))["state"] == "COMPLETE" and t["usage"]
            ),
        )
    return ids


def test_statements_of_both_sides_agree_and_net_to_zero(pair: dict[str, Member]) -> None:
    sh, gz = pair["shanghai"], pair["guizhou"]
    to_gz = _run_at(sh, "52", 2)  # Shanghai's users' work, run in Guizhou
    to_sh = _run_at(gz, "31", 1)  # and the other way
    period = datetime.now(UTC).strftime("%Y-%m")

    at_sh = sh.get(f"/api/v1/settlements/{gz.code}/{period}")
    at_gz = gz.get(f"/api/v1/settlements/{sh.code}/{period}")
    for out in (at_sh, at_gz):
        assert out["agree"] and out["mismatches"] == [], out
    assert [line[0] for line in at_sh["mine"]["owed_to_peer"]] == sorted(to_gz)
    assert [line[0] for line in at_sh["mine"]["owed_by_peer"]] == to_sh
    net_sh = Decimal(at_sh["mine"]["totals"]["net"]["CNY"])
    net_gz = Decimal(at_gz["mine"]["totals"]["net"]["CNY"])
    assert net_sh + net_gz == 0 and net_sh != 0
    # What Shanghai owes is what Guizhou charged, at Guizhou's price (0.8 per core-hour).
    owed = Decimal(at_sh["mine"]["totals"]["owed_to_peer"]["CNY"])
    assert owed == Decimal(at_gz["mine"]["totals"]["owed_by_peer"]["CNY"]) > 0
    usage = [sh.get(f"/api/v1/tasks/{tid}")["usage"][0] for tid in to_gz]
    assert owed == sum(Decimal(u["cpu_core_hours"]) * Decimal("0.8") for u in usage)

    env = {"COMPUTENET_URL": sh.url, "COMPUTENET_TOKEN": sh.token}
    shown = cli("settle", gz.code, env=env)
    assert shown.returncode == 0 and "statements agree" in shown.stdout, shown.stderr
