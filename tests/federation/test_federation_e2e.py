"""Four real nodes and four gateways on loopback: forwarding, resolution, trust refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedproc import Member, start_member, wait_for
from nodeproc import cli

GZ_POOL = "cn.52/guizhou/host"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Member]]:
    base = tmp_path_factory.mktemp("fed")
    members: dict[str, Member] = {}
    try:
        members["national"] = start_member(base, "national", None, "", "national", "11")
        nat = members["national"]
        members["shanghai"] = start_member(base, "shanghai", nat, "31", "regional", "31")
        members["guizhou"] = start_member(base, "guizhou", nat, "52", "regional", "52")
        members["industry"] = start_member(base, "industry", nat, "ai", "industry", "44")
        for m in members.values():
            # Every node learns every pool (own, pushed up, pulled down).
            wait_for(
                f"{m.name} knows all four pools",
                lambda m=m: (
                    len(  # type: ignore[misc]
                        [r for r in m.get("/federation/v1/index") if r["health"] == "healthy"]
                    )
                    == 4
                ),
            )
        yield members
    finally:
        for m in members.values():
            if m.gateway is not None:
                m.gateway.stop()
            m.proc.stop()


def _task(cmd: str, regions: list[str], name: str = "t") -> dict[str, object]:
    return {
        "name": name,
        "executors": [{"image": "local", "command": ["sh", "-c", cmd]}],
        "placement": {"regions": regions},
    }


def test_codes_come_from_the_parent(fed: dict[str, Member]) -> None:
    assert [m.code for m in fed.values()] == ["cn", "cn.31", "cn.52", "cn.ai"]
    chain = httpx.get(f"{fed['guizhou'].url}/federation/v1/node").json()["chain"]
    assert [c["body"]["code"] for c in chain] == ["cn", "cn.52"]


def test_task_runs_under_the_other_region_and_is_seen_from_the_submitter(
    fed: dict[str, Member], tmp_path: Path
) -> None:
    sh, gz = fed["shanghai"], fed["guizhou"]
    effects = tmp_path / "effects"
    tid = sh.post("/api/v1/tasks", _task(f"echo ran-in-gz; echo x >> {effects}", ["52"]))["id"]
    assert tid.startswith("cn.31-")
    done = wait_for(
        "forwarded task completes at the submitter",
        lambda: (t := sh.get(f"/api/v1/tasks/{tid}"))["state"] == "COMPLETE" and t,
    )
    assert done["pool"] == GZ_POOL
    assert done["attempts"][-1]["executors"][0]["stdout"] == "ran-in-gz\n"
    assert any("forwarded to node cn.52" in e["message"] for e in done["events"])
    assert any(e["message"].startswith("[cn.52] leased") for e in done["events"])
    # The same global id at the owner; usage signed by it came back to the submitter.
    assert gz.get(f"/api/v1/tasks/{tid}")["state"] == "COMPLETE"
    assert done["usage"] and done["usage"][0]["pool"] == GZ_POOL
    assert effects.read_text() == "x\n"


def test_cancel_from_the_submitter(fed: dict[str, Member]) -> None:
    sh, gz = fed["shanghai"], fed["guizhou"]
    tid = sh.post("/api/v1/tasks", _task("sleep 60", ["52"]))["id"]
    wait_for("running at Guizhou", lambda: sh.get(f"/api/v1/tasks/{tid}")["state"] == "RUNNING")
    sh.post(f"/api/v1/tasks/{tid}/cancel")
    wait_for("canceled at Guizhou", lambda: gz.get(f"/api/v1/tasks/{tid}")["state"] == "CANCELED")
    wait_for("canceled at Shanghai", lambda: sh.get(f"/api/v1/tasks/{tid}")["state"] == "CANCELED")


def test_resolve_gives_the_same_record_everywhere(fed: dict[str, Member]) -> None:
    answers = []
    for m in fed.values():
        out = cli("resolve", "--json", GZ_POOL, "--url", m.url, "--token", m.token)
        assert out.returncode == 0, out.stderr
        answers.append(json.loads(out.stdout))
    for a in answers:
        rec = a["record"]
        assert (a["cpi"], a["served_by"], rec["node"]) == (GZ_POOL, "cn.52", "cn.52")
        assert rec["spec"] == answers[0]["record"]["spec"]
        assert rec["served_by_url"] == fed["guizhou"].url
    out = cli(
        "resolve",
        "cn.52/guizhou/nope",
        "--url",
        fed["industry"].url,
        "--token",
        fed["industry"].token,
    )
    assert out.returncode != 0 and "cn.52/guizhou/nope" in out.stderr + out.stdout
