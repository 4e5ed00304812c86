"""Four real nodes and four gateways on loopback: forwarding, resolution, trust refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from computenet.errors import Unauthorized
from computenet.federation.enrol import enrol_with_parent
from computenet.federation.envelope import Envelope, seal
from computenet.federation.keys import CertBody, Identity, public_b64, sign_cert
from fedproc import Member, restart, start_member, stop_all, wait_for
from nodeproc import cli

GZ_POOL = "cn.52/guizhou/host"
NATIONAL_TIMEOUT_S = "6"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Member]]:
    base = tmp_path_factory.mktemp("fed")
    members: dict[str, Member] = {}
    try:
        # The national node notices a silent child after 6 s, twice the children's 3 s forward
        # timeout: the partition test's forwards to a killed node are withdrawn (and placed
        # again) before the node's pools turn unavailable, however slow the machine is.
        members["national"] = start_member(
            base,
            "national",
            None,
            "",
            "national",
            "11",
            price_per_core_hour="1",
            fed_timeout_s=NATIONAL_TIMEOUT_S,
        )
        nat = members["national"]
        members["shanghai"] = start_member(base, "shanghai", nat, "31", "regional", "31")
        # 4 cores: the partition test keeps 2 busy and still needs room for 2 more there.
        members["guizhou"] = start_member(base, "guizhou", nat, "52", "regional", "52", cores=4)
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
        stop_all(members)


def _task(
    cmd: str, regions: list[str], name: str = "t", policy: str = "balanced"
) -> dict[str, object]:
    return {
        "name": name,
        "executors": [{"image": "local", "command": ["sh", "-c", cmd]}],
        "placement": {"regions": regions, "policy": policy},
    }


def test_codes_come_from_the_parent(fed: dict[str, Member]) -> None:
    assert [m.code for m in fed.values()] == ["cn", "cn.31", "cn.52", "cn.ai"]
    chain = httpx.get(f"{fed['guizhou'].url}/federation/v1/node").json()["chain"]
    assert [c["body"]["code"] for c in chain] == ["cn", "cn.52"]
    nat = fed["national"]
    out = cli("child-token", "77", "--level", "industry", "--url", nat.url, "--token", nat.token)
    assert out.returncode == 0, out.stderr
    assert "child node code: cn.77" in out.stdout and "--enrol-token cnn_" in out.stdout
    out = cli("child-token", "77", "--url", nat.url, "--token", fed["shanghai"].token)
    assert out.returncode != 0 and "invalid token" in out.stderr


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
    # A second answer comes from the industry node's cache, until the record changes.
    ind, gz = fed["industry"], fed["guizhou"]
    # (A change meanwhile, say a task of an earlier test ending, would drop the entry: poll.)
    wait_for("a cached answer", lambda: ind.get(f"/api/v1/resolve/{GZ_POOL}")["cached"], 20)
    tid = gz.post("/api/v1/tasks", _task("sleep 30", ["52"]))["id"]
    # Seen well within the 30 s TTL: the change invalidated the cached answer.
    wait_for(
        "changed record re-resolved",
        lambda: ind.get(f"/api/v1/resolve/{GZ_POOL}")["record"]["running_tasks"] == 1,
        20,
    )
    gz.post(f"/api/v1/tasks/{tid}/cancel")
    # Its core is free again only once the gateway has stopped it (told at its next heartbeat);
    # the partition test counts on Guizhou's free cores.
    wait_for("canceled at Guizhou", lambda: gz.get(f"/api/v1/tasks/{tid}")["state"] == "CANCELED")
    out = cli(
        "resolve",
        "cn.52/guizhou/nope",
        "--url",
        fed["industry"].url,
        "--token",
        fed["industry"].token,
    )
    assert out.returncode != 0 and "cn.52/guizhou/nope" in out.stderr + out.stdout


def _metric(m: Member, name: str, labels: str) -> float | None:
    text = httpx.get(f"{m.url}/metrics", headers=m.headers, timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return None


def test_nodes_measure_rtt_to_their_parent_and_report_sync_lag(fed: dict[str, Member]) -> None:
    nat, sh = fed["national"], fed["shanghai"]

    def pairs(m: Member) -> set[tuple[str, str]]:
        return {(e["from_region"], e["to_region"]) for e in m.get("/api/v1/console/latency")}

    # Each child times its parent: the sample is kept at both ends (child -> parent region).
    wait_for("Shanghai's RTT at the national node", lambda: ("31", "11") in pairs(nat))
    assert {("52", "11"), ("44", "11")} <= pairs(nat)
    assert ("31", "11") in pairs(sh)
    rtt = [e for e in nat.get("/api/v1/console/latency") if e["from_region"] == "31"]
    assert 0 < rtt[0]["rtt_ms"] < 1000
    # Sync lag: seconds since the last good exchange, per peer, at both ends.
    lag = wait_for(
        "a sync lag for cn.31",
        lambda: _metric(nat, "computenet_sync_lag_seconds", 'peer="cn.31"'),
    )
    assert 0 <= lag < 3  # the child syncs every 0.5 s
    assert _metric(sh, "computenet_sync_lag_seconds", 'peer="cn"') == 0.0


def test_the_console_shows_the_whole_federation(fed: dict[str, Member]) -> None:
    nat, sh = fed["national"], fed["shanghai"]
    tree = nat.get("/api/v1/console/tree")
    assert tree["parent"] is None
    children = {c["code"]: c for c in tree["children"]}
    assert set(children) == {"cn.31", "cn.52", "cn.ai"}
    assert all(not c["silent"] and c["last_seen_s"] < 3 for c in children.values())
    nodes = {n["code"]: n for n in tree["federation"]}
    assert {code: n["relation"] for code, n in nodes.items()} == {
        "cn": "self",
        "cn.31": "subtree",
        "cn.52": "subtree",
        "cn.ai": "subtree",
    }
    assert all(n["pools"] == 1 for n in nodes.values())
    tree = sh.get("/api/v1/console/tree")
    assert tree["parent"] == "cn" and tree["children"] == []
    assert {n["code"]: n["relation"] for n in tree["federation"]}["cn.52"] == "elsewhere"
    # The map places every node's pools, Guizhou's too, seen from Shanghai.
    points = {p["code"]: p for p in sh.get("/api/v1/console/map")}
    assert points["52"]["pools"] == 1 and points["44"]["pools"] == 1
    # The pools page and the counters cover the same federation as the map.
    listed = nat.get("/api/v1/console/pools")["pools"]
    assert {p["cpi"].split("/")[0] for p in listed} == {"cn", "cn.31", "cn.52", "cn.ai"}
    assert all(p["cpu_cores"] >= 1 and p["provider"].count("/") == 1 for p in listed)
    page = nat.get("/api/v1/console/pools?page_size=2")
    assert len(page["pools"]) == 2 and page["next_page_token"] == page["pools"][1]["cpi"]
    assert nat.get("/api/v1/console/pools?q=cn.52")["pools"][0]["cpi"] == GZ_POOL
    counters = nat.get("/api/v1/console/overview")
    assert counters["pools_by_health"]["healthy"] == 4
    assert counters["cpu_cores"] == sum(p["cpu_cores"] for p in listed)
    # A bare node code resolves to that node.
    out = cli("resolve", "cn.52", "--url", sh.url, "--token", sh.token)
    assert out.returncode == 0, out.stderr
    assert f"node cn.52 at {fed['guizhou'].url}: 1 pool (1 healthy)" in out.stdout


# ---- trust: each refusal is a JSON error with a reason, and logged ------------------------


def _send(url: str, env: Envelope) -> httpx.Response:
    return httpx.post(f"{url}/federation/v1/msg/{env.kind}", json=env.model_dump(mode="json"))


@pytest.fixture(scope="module")
def rogue(fed: dict[str, Member]) -> Identity:
    """A real child of the national node, enrolled with a real token."""
    tok = fed["national"].post("/federation/v1/tokens", {"label": "99"})["enrol_token"]
    return enrol_with_parent(fed["national"].url, tok, "http://127.0.0.1:9")


def _refused(r: httpx.Response, status: int, reason: str, log: str, proc: Member) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == reason and body["message"]
    wait_for("refusal logged", lambda: log in proc.proc.output(), 10)


def test_bad_signature_is_refused(fed: dict[str, Member], rogue: Identity) -> None:
    env = seal(rogue, "sync.push", {"seq": 1, "full": True, "records": []}, "cn")
    env.body["full"] = False  # tampered after signing
    r = _send(fed["national"].url, env)
    _refused(r, 401, "bad_signature", "refused sync.push message from cn.99", fed["national"])


def test_replayed_message_is_refused(fed: dict[str, Member], rogue: Identity) -> None:
    env = seal(rogue, "index.pull", {"after": 0}, "cn")
    assert _send(fed["national"].url, env).status_code == 200
    r = _send(fed["national"].url, env)
    _refused(r, 401, "replayed", "was already used", fed["national"])


def test_a_message_signed_for_another_node_is_refused(
    fed: dict[str, Member], rogue: Identity
) -> None:
    """Attack class 9: a signed message meant for one node, replayed to another within the
    replay window (fresh to that node's guard), is refused by it, and logged."""
    meant_for_shanghai = seal(rogue, "index.pull", {"after": 0}, "cn.31")
    for name in ("national", "guizhou"):
        r = _send(fed[name].url, meant_for_shanghai)
        _refused(r, 401, "misdirected", "is for node 'cn.31'", fed[name])
    unaddressed = seal(rogue, "index.pull", {"after": 0}, "")
    _refused(_send(fed["national"].url, unaddressed), 401, "misdirected", "(none)", fed["national"])
    # The recipient is signed: rewriting it breaks the signature.
    meant_for_shanghai.recipient = "cn"
    r = _send(fed["national"].url, meant_for_shanghai)
    _refused(r, 401, "bad_signature", "refused index.pull message from cn.99", fed["national"])
    # The same message addressed to the national node is answered.
    assert _send(fed["national"].url, seal(rogue, "index.pull", {"after": 0}, "cn")).is_success


def test_child_claiming_a_code_outside_its_prefix_is_refused(
    fed: dict[str, Member], rogue: Identity
) -> None:
    record = {"cpi": GZ_POOL, "node": "cn.52", "health": "healthy", "spec": {}}
    env = seal(rogue, "sync.push", {"seq": 1, "full": True, "records": [record]}, "cn")
    r = _send(fed["national"].url, env)
    _refused(r, 403, "outside_prefix", "may not publish cn.52/guizhou/host", fed["national"])
    # A certificate the child signed itself for a code outside its prefix fails the same way.
    forged = CertBody(
        code="cn.52",
        level="regional",
        url="http://127.0.0.1:9",
        public_key=public_b64(rogue.key),
        issuer="cn.99",
        issued_at="2026-01-01T00:00:00",
    )
    liar = Identity(rogue.key, [*rogue.chain, sign_cert(rogue.key, forged)], None)
    r = _send(fed["national"].url, seal(liar, "index.pull", {"after": 0}, "cn"))
    _refused(r, 403, "outside_prefix", "is not inside its issuer's prefix", fed["national"])
    # Nothing it sent reached the index.
    assert all(row["via"] != "cn.99" for row in fed["national"].get("/federation/v1/index"))


def test_enrolment_with_a_wrong_token_is_refused(fed: dict[str, Member]) -> None:
    with pytest.raises(Unauthorized, match="invalid enrolment token"):
        enrol_with_parent(fed["national"].url, "cnn_not-a-real-token", "http://127.0.0.1:9")
    wait_for(
        "refusal logged",
        lambda: (
            "refused enrolment from http://127.0.0.1:9: invalid enrolment token"
            in fed["national"].proc.output()
        ),
        10,
    )
    out = cli(
        "node",
        "--data-dir",
        str(Path(fed["national"].data_dir).parent / "bad"),
        "--port",
        "9",
        "--level",
        "regional",
        "--parent",
        fed["national"].url,
        "--enrol-token",
        "cnn_bad-but-long-enough",
    )
    assert out.returncode != 0 and "refused enrolment" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


# ---- partitions: runs last, it kills and restarts Guizhou ---------------------------------


def _health_of(m: Member, owner: str) -> set[str]:
    return {r["health"] for r in m.get(f"/federation/v1/index?owner={owner}")}


def _free_cores(m: Member, cpi: str) -> int | None:
    rows = [r["record"] for r in m.get("/federation/v1/index") if r["cpi"] == cpi]
    return rows[0]["free"]["cpu_cores"] if rows and "free" in rows[0] else None


def test_killed_regional_node_reconciles_without_loss_or_rerun(
    fed: dict[str, Member], tmp_path: Path
) -> None:
    nat, sh, gz = fed["national"], fed["shanghai"], fed["guizhou"]
    effects = tmp_path / "effects"

    def task(name: str, regions: list[str], sleep_s: int = 0) -> str:
        cmd = f"sleep {sleep_s}; echo {name} >> {effects}"
        # cheapest: Guizhou's pool (price 0) before Beijing's (price 1) while both look up.
        return str(sh.post("/api/v1/tasks", _task(cmd, regions, name, "cheapest"))["id"])

    # Two tasks running under Guizhou when it dies (its gateway keeps running them). They hold
    # 2 of the pool's 4 cores, so the pool still shows room for the two tasks below.
    running = [task(f"run{i}", ["52"], 6) for i in range(2)]
    for tid in running:
        wait_for("running", lambda tid=tid: sh.get(f"/api/v1/tasks/{tid}")["state"] == "RUNNING")
    wait_for("Shanghai sees 2 of Guizhou's cores free", lambda: _free_cores(sh, GZ_POOL) == 2)
    gz.proc.kill9()
    # Forwarded while Guizhou is down: never confirmed, so withdrawn and re-queued.
    unconfirmed = task("unconfirmed", ["52"])
    # Placed on Guizhou before its silence is noticed (6 s): withdrawn after 3 s unconfirmed
    # (perhaps placed there and withdrawn again), then run in Beijing.
    retried = task("retried", ["52", "11"])
    for tid in (unconfirmed, retried):
        wait_for(
            f"{tid} withdrawn from Guizhou",
            lambda tid=tid: any(
                "forward withdrawn" in e["message"]
                for e in sh.get(f"/api/v1/tasks/{tid}")["events"]
            ),
            30,
        )
    wait_for(
        "Guizhou unavailable at the national node",
        lambda: _health_of(nat, "cn.52") == {"unavailable"},
        30,
    )
    wait_for(
        "Guizhou unavailable at Shanghai", lambda: _health_of(sh, "cn.52") == {"unavailable"}, 30
    )
    # New work that may run in Guizhou or Beijing goes to Beijing (the national node's pool).
    elsewhere = task("elsewhere", ["52", "11"])
    done = wait_for(
        "task placed elsewhere completes",
        lambda: (t := sh.get(f"/api/v1/tasks/{elsewhere}"))["state"] == "COMPLETE" and t,
    )
    assert done["pool"] == "cn/national/host"
    assert not any("forwarded to node cn.52" in e["message"] for e in done["events"])
    again = wait_for(
        "withdrawn forward completes elsewhere",
        lambda: (t := sh.get(f"/api/v1/tasks/{retried}"))["state"] == "COMPLETE" and t,
    )
    assert again["pool"] == "cn/national/host"
    assert any("forward withdrawn" in e["message"] for e in again["events"]), again["events"]
    # Its last forward (placed again while Guizhou still looked up) is withdrawn in turn; then
    # it waits, with nowhere to run.
    waiting = wait_for(
        "the unconfirmed task waits unplaced",
        lambda: (t := sh.get(f"/api/v1/tasks/{unconfirmed}")).get("pool") is None and t,
        30,
    )
    assert waiting["state"] == "QUEUED", waiting
    assert any("forward withdrawn" in e["message"] for e in waiting["events"])
    # Guizhou comes back: its pools return, the running tasks finish once, the waiting one runs.
    restart(gz)
    wait_for("Guizhou healthy at Shanghai", lambda: _health_of(sh, "cn.52") == {"healthy"}, 30)
    for tid in [*running, unconfirmed]:
        wait_for(
            f"{tid} completes",
            lambda tid=tid: sh.get(f"/api/v1/tasks/{tid}")["state"] == "COMPLETE",
            90,
        )
        assert sh.get(f"/api/v1/tasks/{tid}")["pool"] == GZ_POOL
    lines = sorted(effects.read_text().split())
    assert lines == ["elsewhere", "retried", "run0", "run1", "unconfirmed"]
