"""The node's store, task service and dispatcher against both backends: SQLite and PostgreSQL.

Every test runs twice, once on an embedded SQLite file and once on a fresh database of a
real PostgreSQL server (``tests/pg.py`` starts one; locally it skips without one, under
``CI=true`` it fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from computenet.errors import Conflict, InvalidInput, NotFound, Unauthorized
from computenet.model.pool import Accelerator, PoolSpec
from computenet.model.protocol import (
    DeclarePools,
    ExecutorReport,
    Heartbeat,
    LogChunk,
    PoolLive,
    TaskReport,
    UsageReport,
)
from computenet.model.task import TaskSpec, TaskState
from computenet.model.usage import measure_usage
from computenet.node import tasks as tasks_module
from computenet.node.access import Visibility
from computenet.node.auth import new_token
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.node.tasks import ListFilter
from computenet.node.views import View
from computenet.store import schema
from computenet.store import tables as t
from computenet.store.db import sqlite_url
from computenet.store.migrate import current_tables
from computenet.tasks.clock import Clock, FakeClock, utcnow
from pg import fresh_database, require_postgres

MakeRuntime = Callable[..., NodeRuntime]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return fresh_database(require_postgres())


@pytest.fixture
def make_runtime(tmp_path: Path, db_url: str) -> Iterator[MakeRuntime]:
    """Build runtimes on this test's database (not bootstrapped); all are closed at the end."""
    made: list[NodeRuntime] = []

    def make(clock: Clock = utcnow, **overrides: Any) -> NodeRuntime:
        settings: dict[str, Any] = {
            "data_dir": tmp_path,
            "db_url": db_url,
            "lease_ttl_s": 30.0,
            "heartbeat_timeout_s": 60.0,
        }
        settings.update(overrides)
        rt = NodeRuntime(NodeSettings(**settings), clock)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.db.dispose()


@dataclass
class Node:
    rt: NodeRuntime
    admin_token: str


@pytest.fixture
def node(make_runtime: MakeRuntime) -> Node:
    rt = make_runtime()
    boot = rt.bootstrap()
    assert boot.admin_token is not None
    return Node(rt, boot.admin_token)


@pytest.fixture
def rt(node: Node) -> NodeRuntime:
    return node.rt


def make_spec(**fields: Any) -> TaskSpec:
    return TaskSpec.model_validate({"executors": [{"command": ["echo", "hi"]}], **fields})


@dataclass
class Gw:
    gid: str
    prefix: str
    cpis: dict[str, str]


def add_gateway(rt: NodeRuntime, label: str = "acme", pools: list[PoolSpec] | None = None) -> Gw:
    prefix, token = rt.enrol_provider(label, "")
    assert rt.auth.redeem_enrolment(token) == prefix
    gid = rt.dispatch.register_gateway(prefix, f"{label}-gw")
    pools = pools or [PoolSpec(label="cpu", cpu_cores=4, memory_mib=16384)]
    cpis = rt.dispatch.declare_pools(gid, DeclarePools(pools=pools))
    return Gw(gid, prefix, cpis)


def leased(rt: NodeRuntime, gw: Gw, **spec: Any) -> tuple[str, str]:
    """Submit a task, place it and lease it to ``gw``; return (task id, lease id)."""
    tid, _ = rt.tasks.submit(make_spec(**spec), "alice")
    assert rt.placer.schedule_pass() >= 1
    [lt] = [x for x in rt.dispatch.lease(gw.gid, 10) if x.task_id == tid]
    return tid, lt.lease_id


def state_of(rt: NodeRuntime, tid: str) -> TaskState:
    return rt.tasks.get(tid, View.MINIMAL).state


def row_of(rt: NodeRuntime, tid: str) -> t.Task:
    with rt.db.read() as s:
        row = s.get(t.Task, tid)
        assert row is not None
        return row


# ---- migrations and bootstrap -------------------------------------------------------------


def test_migrations_create_every_table(rt: NodeRuntime) -> None:
    tables = current_tables(rt.db)
    assert set(schema.Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert rt.db.is_sqlite == (rt.db.url.get_backend_name() == "sqlite")


def test_migrated_schema_matches_the_models(rt: NodeRuntime) -> None:
    with rt.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diffs = compare_metadata(ctx, schema.Base.metadata)
    assert diffs == []


def test_bootstrap_is_idempotent(make_runtime: MakeRuntime, node: Node) -> None:
    before = current_tables(node.rt.db)
    assert node.rt.bootstrap().admin_token is None
    assert current_tables(node.rt.db) == before
    again = make_runtime()  # a restart on the same store
    assert again.bootstrap().admin_token is None
    with again.db.read() as s:
        admins = s.scalars(select(func.count()).where(t.Token.kind == "admin")).one()
        meta = {m.key: m.value for m in s.scalars(select(t.NodeMeta))}
    assert admins == 1
    assert meta["node_code"] == "cn"
    # The first admin token still works after the restart.
    assert again.auth.check_token(node.admin_token).kind == "admin"


def test_admin_token_verifies_and_wrong_tokens_do_not(node: Node) -> None:
    p = node.rt.auth.check_token(node.admin_token)
    assert (p.kind, p.subject) == ("admin", "admin")
    assert node.rt.auth.check(f"Bearer {node.admin_token}") == p
    assert node.rt.auth.check(f"bearer   {node.admin_token}  ") == p
    for wrong in ("", "cna_nope", node.admin_token + "x", node.admin_token[:-1]):
        with pytest.raises(Unauthorized):
            node.rt.auth.check_token(wrong)
    for header in (None, "", "Bearer", "Bearer  ", f"Basic {node.admin_token}", node.admin_token):
        with pytest.raises(Unauthorized):
            node.rt.auth.check(header)


def test_token_is_stored_only_as_a_hash(node: Node) -> None:
    with node.rt.db.read() as s:
        hashes = list(s.scalars(select(t.Token.token_hash)))
    assert hashes and node.admin_token not in hashes
    assert all(len(h) == 64 for h in hashes)


def test_node_code_is_pinned(make_runtime: MakeRuntime, node: Node) -> None:
    # The federation identity in the data directory pins the code too, so a runtime for
    # another code is refused as it is built, before it touches the store.
    with pytest.raises(Conflict, match="belongs to node 'cn'"):
        make_runtime(node_code="cn.31").bootstrap()
    assert make_runtime(node_code="cn").bootstrap().admin_token is None


# ---- tasks --------------------------------------------------------------------------------


def test_submit_and_get(rt: NodeRuntime) -> None:
    tid, created = rt.tasks.submit(make_spec(name="hello", tags={"a": "1"}), "alice")
    assert created and tid.startswith("cn-")
    full = rt.tasks.get(tid)
    assert full.state is TaskState.QUEUED
    assert full.name == "hello"
    assert full.spec is not None and full.spec.tags == {"a": "1"}
    assert full.events is not None and [e.state for e in full.events] == [TaskState.QUEUED]
    assert full.attempt == 0
    minimal = rt.tasks.get(tid, View.MINIMAL)
    assert minimal.spec is None and minimal.events is None
    with pytest.raises(NotFound):
        rt.tasks.get(tid, scope=Visibility(owner="bob"))
    with pytest.raises(NotFound):
        rt.tasks.get("cn-nope")


def test_submit_is_idempotent_on_a_client_key(rt: NodeRuntime) -> None:
    spec = make_spec(name="x")
    tid, created = rt.tasks.submit(spec, "alice", "key-1")
    assert created
    assert rt.tasks.submit(make_spec(name="x"), "alice", "key-1") == (tid, False)
    with pytest.raises(Conflict, match="key-1"):
        rt.tasks.submit(make_spec(name="y"), "alice", "key-1")
    # Keys belong to their owner.
    other, created = rt.tasks.submit(spec, "bob", "key-1")
    assert created and other != tid
    # Without a key, every submission is a new task.
    assert rt.tasks.submit(spec, "alice")[0] != rt.tasks.submit(spec, "alice")[0]
    for bad in ("", "k" * 257):
        with pytest.raises(InvalidInput, match="idempotency key"):
            rt.tasks.submit(spec, "alice", bad)
    assert len(rt.tasks.list(page_size=100, scope=Visibility(owner="alice")).tasks) == 3


def test_submit_refuses_a_malformed_pinned_pool(rt: NodeRuntime) -> None:
    with pytest.raises(InvalidInput, match="three parts"):
        rt.tasks.submit(make_spec(placement={"pool": "garbage"}), "alice")
    assert rt.tasks.list(page_size=10).tasks == []


def test_list_pagination_has_no_duplicates_or_gaps(rt: NodeRuntime) -> None:
    ids = [rt.tasks.submit(make_spec(name=f"t{i}"), "alice")[0] for i in range(23)]
    rt.tasks.submit(make_spec(name="bobs"), "bob")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = rt.tasks.list(
            View.MINIMAL, page_size=5, page_token=token, scope=Visibility(owner="alice")
        )
        assert len(page.tasks) <= 5
        assert all(x.spec is None for x in page.tasks)
        seen += [x.id for x in page.tasks]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert pages == 5
    assert seen == list(reversed(ids))  # newest first, each exactly once
    # An exact multiple of the page size ends without a dangling token.
    first = rt.tasks.list(page_size=24)
    assert len(first.tasks) == 24 and first.next_page_token is None
    assert rt.tasks.list(page_size=2047).next_page_token is None


def test_list_filters_by_state_and_name(rt: NodeRuntime) -> None:
    a = rt.tasks.submit(make_spec(name="train-1"), "alice")[0]
    b = rt.tasks.submit(make_spec(name="train-2"), "alice")[0]
    c = rt.tasks.submit(make_spec(name="infer_%"), "alice")[0]
    rt.tasks.cancel(b)

    def ids(f: ListFilter) -> list[str]:
        return [x.id for x in rt.tasks.list(page_size=100, filt=f).tasks]

    assert ids(ListFilter(name_prefix="train")) == [b, a]
    assert ids(ListFilter(state=TaskState.CANCELED)) == [b]
    assert ids(ListFilter(state=TaskState.QUEUED, name_prefix="train")) == [a]
    assert ids(ListFilter(name_prefix="infer_%")) == [c]
    assert ids(ListFilter(name_prefix="infer%")) == []  # wildcards are literal


@pytest.mark.parametrize("size", [0, -1, 2048, 5000])
def test_list_refuses_bad_page_sizes(rt: NodeRuntime, size: int) -> None:
    with pytest.raises(InvalidInput, match="page_size"):
        rt.tasks.list(page_size=size)


def test_list_refuses_bad_page_tokens(rt: NodeRuntime) -> None:
    for token in ("abc", "1.5", "0x10"):
        with pytest.raises(InvalidInput, match="page_token"):
            rt.tasks.list(page_token=token)


def test_tag_filters_follow_tes_semantics(rt: NodeRuntime) -> None:
    t1 = rt.tasks.submit(make_spec(tags={"team": "a", "env": "prod"}), "alice")[0]
    t2 = rt.tasks.submit(make_spec(tags={"team": "b"}), "alice")[0]
    t3 = rt.tasks.submit(make_spec(tags={"team": ""}), "alice")[0]
    t4 = rt.tasks.submit(make_spec(), "alice")[0]

    def ids(tags: dict[str, str]) -> set[str]:
        page = rt.tasks.list(page_size=100, filt=ListFilter(tags=tags))
        return {x.id for x in page.tasks}

    assert ids({"team": "a"}) == {t1}
    assert ids({"team": ""}) == {t1, t2, t3}  # key present, any value
    assert ids({"team": "a", "env": ""}) == {t1}
    assert ids({"team": "b", "env": ""}) == set()  # all filters must match
    assert ids({"env": "dev"}) == set()
    assert ids({"missing": ""}) == set()
    assert ids({}) == {t1, t2, t3, t4}


def test_tag_filtered_pages_span_many_rows(rt: NodeRuntime) -> None:
    now = datetime.now(UTC)
    keep = {0, 150, 299}
    with rt.db.write() as s:
        for i in range(300):
            s.add(
                t.Task(
                    id=f"cn-bulk-{i:04d}",
                    seq=i + 1,
                    owner="alice",
                    state="QUEUED",
                    spec={"executors": [{"command": ["true"]}]},
                    priority=0,
                    cpu_cores=1,
                    memory_mib=954,
                    accelerators=0,
                    attempt=0,
                    reason="",
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                    tags={"keep": "yes"} if i in keep else {"other": "x"},
                )
            )
    seen: list[str] = []
    token: str | None = None
    while True:
        page = rt.tasks.list(
            page_size=1,
            page_token=token,
            filt=ListFilter(tags={"keep": ""}),
            scope=Visibility(owner="alice"),
        )
        seen += [x.id for x in page.tasks]
        token = page.next_page_token
        if token is None:
            break
    assert seen == [f"cn-bulk-{i:04d}" for i in sorted(keep, reverse=True)]


def test_cancel(rt: NodeRuntime) -> None:
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    with pytest.raises(NotFound):
        rt.tasks.cancel(tid, scope=Visibility(owner="bob"))
    assert rt.tasks.cancel(tid, scope=Visibility(owner="alice")) is TaskState.CANCELED
    assert rt.tasks.cancel(tid) is TaskState.CANCELED  # repeating it is harmless
    got = rt.tasks.get(tid)
    assert got.state is TaskState.CANCELED and got.ended_at is not None
    with pytest.raises(NotFound):
        rt.tasks.cancel("cn-missing")


def test_cancel_of_a_placed_task_frees_its_pool(rt: NodeRuntime) -> None:
    add_gateway(rt)
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    assert rt.placer.schedule_pass() == 1
    assert row_of(rt, tid).pool_cpi == "cn/acme/cpu"
    assert rt.tasks.cancel(tid) is TaskState.CANCELED
    assert row_of(rt, tid).pool_cpi is None


def test_cancel_of_a_finished_task_conflicts(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    tid, lease = leased(rt, gw)
    rt.dispatch.report(gw.gid, tid, TaskReport(lease_id=lease, state=TaskState.COMPLETE))
    with pytest.raises(Conflict, match="already finished"):
        rt.tasks.cancel(tid)
    assert state_of(rt, tid) is TaskState.COMPLETE


# ---- enrolment and the gateway protocol ---------------------------------------------------


def test_enrolment_tokens_are_one_time(rt: NodeRuntime) -> None:
    prefix, token = rt.enrol_provider("acme", "")
    assert prefix == "cn/acme"
    assert [p.prefix for p in rt.providers()] == ["cn/acme"]
    assert rt.providers()[0].name == "acme"
    with pytest.raises(Unauthorized):
        rt.auth.check_token(token)  # not a bearer credential
    assert rt.auth.redeem_enrolment(token) == "cn/acme"
    with pytest.raises(Unauthorized, match="already used"):
        rt.auth.redeem_enrolment(token)
    with pytest.raises(Unauthorized):
        rt.auth.redeem_enrolment("cne_garbage")
    with pytest.raises(InvalidInput):
        rt.enrol_provider("Bad_Label", "")
    with pytest.raises(NotFound):
        rt.dispatch.register_gateway("cn/nobody", "gw")


def test_gateway_credentials_are_gateway_principals(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    cred = new_token(rt.db, "gateway", gw.gid)
    p = rt.auth.check_token(cred)
    assert (p.kind, p.subject) == ("gateway", gw.gid)


def test_declare_pools_allocates_cpis_inside_the_provider(rt: NodeRuntime) -> None:
    gw = add_gateway(
        rt,
        pools=[
            PoolSpec(label="cpu", cpu_cores=4, memory_mib=16384),
            PoolSpec(label="a100-80g", cpu_cores=32, memory_mib=262144),
        ],
    )
    assert gw.cpis == {"cpu": "cn/acme/cpu", "a100-80g": "cn/acme/a100-80g"}
    rows = rt.dispatch.pool_rows()
    assert [r.cpi for r in rows] == ["cn/acme/a100-80g", "cn/acme/cpu"]
    assert {r.provider_prefix for r in rows} == {"cn/acme"}
    # A redeclaration bumps the version only when the description changes.
    same = DeclarePools(pools=[PoolSpec(label="cpu", cpu_cores=4, memory_mib=16384)])
    rt.dispatch.declare_pools(gw.gid, same)
    assert rt.dispatch.pool_rows(["cn/acme/cpu"])[0].version == 1
    bigger = DeclarePools(pools=[PoolSpec(label="cpu", cpu_cores=8, memory_mib=16384)])
    rt.dispatch.declare_pools(gw.gid, bigger)
    assert rt.dispatch.pool_rows(["cn/acme/cpu"])[0].version == 2
    with pytest.raises(NotFound):
        rt.dispatch.declare_pools("nope", same)


def test_dispatch_flow_from_submit_to_usage(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    tid, created = rt.tasks.submit(make_spec(resources={"cpu_cores": 2}), "alice")
    assert created
    assert rt.dispatch.lease(gw.gid, 5) == []  # nothing placed yet
    assert rt.placer.schedule_pass() == 1
    assert rt.placer.schedule_pass() == 0
    row = row_of(rt, tid)
    assert row.pool_cpi == "cn/acme/cpu" and row.state == "QUEUED"

    [lt] = rt.dispatch.lease(gw.gid, 5)
    assert (lt.task_id, lt.attempt, lt.pool_cpi) == (tid, 1, "cn/acme/cpu")
    assert lt.spec.resources.cpu_cores == 2
    assert state_of(rt, tid) is TaskState.INITIALIZING
    assert rt.dispatch.lease(gw.gid, 5) == []  # not handed out twice

    def rep(state: TaskState, **kw: Any) -> TaskReport:
        return TaskReport(lease_id=lt.lease_id, state=state, **kw)

    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    hello = ExecutorReport(index=0, start_time=start, stdout=LogChunk(offset=0, data="hello "))
    assert (
        rt.dispatch.report(gw.gid, tid, rep(TaskState.RUNNING, executors=[hello])).cancel is False
    )
    # The same chunk again (a retry) does not duplicate the text.
    rt.dispatch.report(gw.gid, tid, rep(TaskState.RUNNING, executors=[hello]))
    got = rt.tasks.get(tid)
    assert got.state is TaskState.RUNNING and got.started_at is not None
    assert got.attempts is not None
    assert got.attempts[0].executors[0].stdout == "hello "

    # An overlapping chunk adds only what is new; a later chunk appends.
    overlap = ExecutorReport(index=0, stdout=LogChunk(offset=3, data="lo world"))
    rt.dispatch.report(gw.gid, tid, rep(TaskState.RUNNING, executors=[overlap]))
    end = datetime(2025, 1, 2, 3, 5, 5, tzinfo=UTC)
    final = [
        ExecutorReport(
            index=0,
            end_time=end,
            exit_code=0,
            stdout=LogChunk(offset=11, data="!\n"),
            stderr=LogChunk(offset=0, data="warn\n"),
        )
    ]
    # The gateway's word is taken for the time only, and only as long as the task existed;
    # cores and memory come from the task itself.
    usage = UsageReport(wall_s=Decimal("0.25"), cpu_cores=64, memory_mib=2048, cards=5)
    done = rep(TaskState.COMPLETE, executors=final, usage=usage, system_log=["uploaded 0 files"])
    assert rt.dispatch.report(gw.gid, tid, done).cancel is False
    rt.dispatch.report(gw.gid, tid, done)  # a resent final report changes nothing

    got = rt.tasks.get(tid)
    assert got.state is TaskState.COMPLETE and got.ended_at is not None
    assert got.attempts is not None
    [ex] = got.attempts[0].executors
    assert ex.stdout == "hello world!\n"
    assert ex.stderr == "warn\n"
    assert ex.exit_code == 0
    assert ex.start_time == start and ex.end_time == end
    assert got.usage is not None and len(got.usage) == 1
    assert got.usage[0].wall_s == Decimal("0.25")
    assert got.usage[0].cards == 0  # a CPU pool: whatever the gateway claimed
    assert got.usage[0].pool == "cn/acme/cpu"
    assert got.events is not None
    messages = [e.message for e in got.events]
    assert "uploaded 0 files" in messages
    states = [e.state for e in got.events]
    assert states[0] is TaskState.QUEUED and states[-1] is TaskState.COMPLETE
    assert TaskState.INITIALIZING in states and TaskState.RUNNING in states
    with rt.db.read() as s:
        n = s.scalars(select(func.count()).where(t.UsageRecord.task_id == tid)).one()
    assert n == 1
    # The pool's capacity is free again.
    tid2, _ = leased(rt, gw, resources={"cpu_cores": 4})
    assert state_of(rt, tid2) is TaskState.INITIALIZING


def test_log_chunk_gap_is_marked(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    tid, lease = leased(rt, gw)
    first = ExecutorReport(index=0, stdout=LogChunk(offset=0, data="abc"))
    gap = ExecutorReport(index=0, stdout=LogChunk(offset=10, data="xyz"))
    for ex in (first, gap):
        rt.dispatch.report(gw.gid, tid, TaskReport(lease_id=lease, state="RUNNING", executors=[ex]))
    attempts = rt.tasks.get(tid).attempts
    assert attempts is not None
    out = attempts[0].executors[0].stdout
    assert out is not None
    assert out.startswith("abc") and out.endswith("xyz")
    assert "7 characters lost" in out


def test_reports_need_the_current_lease(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    other = add_gateway(rt, "other")
    tid, lease = leased(rt, gw)
    with pytest.raises(Conflict, match="no longer held"):
        rt.dispatch.report(gw.gid, tid, TaskReport(lease_id="stale", state=TaskState.RUNNING))
    with pytest.raises(Conflict):
        rt.dispatch.report(other.gid, tid, TaskReport(lease_id=lease, state=TaskState.RUNNING))
    with pytest.raises(NotFound):
        rt.dispatch.report(gw.gid, "cn-nope", TaskReport(lease_id=lease, state="RUNNING"))
    assert state_of(rt, tid) is TaskState.INITIALIZING


def test_heartbeat_renews_leases_and_relays_cancels(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    a, lease_a = leased(rt, gw)
    b, lease_b = leased(rt, gw)
    before = row_of(rt, a).lease_expires_at
    assert before is not None
    time.sleep(0.01)
    reply = rt.dispatch.heartbeat(gw.gid, Heartbeat(leases=[lease_a, lease_b, "gone"]))
    assert sorted(reply.renewed) == sorted([lease_a, lease_b])
    assert reply.lost == ["gone"]
    assert reply.cancel == []
    after = row_of(rt, a).lease_expires_at
    assert after is not None and after > before

    assert rt.tasks.cancel(b) is TaskState.CANCELING
    reply = rt.dispatch.heartbeat(gw.gid, Heartbeat(leases=[lease_a, lease_b]))
    assert reply.cancel == [lease_b]
    rep = rt.dispatch.report(gw.gid, b, TaskReport(lease_id=lease_b, state=TaskState.RUNNING))
    assert rep.cancel is True
    rt.dispatch.report(gw.gid, b, TaskReport(lease_id=lease_b, state=TaskState.CANCELED))
    assert state_of(rt, b) is TaskState.CANCELED
    # A finished task's lease is no longer renewed, nor called lost: its final report may
    # have crossed this heartbeat, and "lost" would make the gateway kill finished work.
    reply = rt.dispatch.heartbeat(gw.gid, Heartbeat(leases=[lease_a, lease_b]))
    assert reply.renewed == [lease_a] and reply.lost == []
    # Another gateway cannot renew someone else's lease.
    other = add_gateway(rt, "other")
    assert rt.dispatch.heartbeat(other.gid, Heartbeat(leases=[lease_a])).lost == [lease_a]
    with pytest.raises(NotFound):
        rt.dispatch.heartbeat("nope", Heartbeat())


def test_heartbeat_reports_pool_health(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    rt.dispatch.heartbeat(gw.gid, Heartbeat(pools=[PoolLive(label="cpu", healthy=False)]))
    assert rt.dispatch.pool_rows()[0].health == "unhealthy"
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    assert rt.placer.schedule_pass() == 0
    assert "unhealthy" in (rt.tasks.get(tid).reason or "")
    live = PoolLive(label="cpu", healthy=True, running_tasks=3)
    rt.dispatch.heartbeat(gw.gid, Heartbeat(pools=[live]))
    [pool] = rt.dispatch.pool_rows()
    assert (pool.health, pool.running_tasks) == ("healthy", 3)
    assert rt.placer.schedule_pass() == 1


def test_unplaceable_task_says_why(rt: NodeRuntime) -> None:
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    rt.placer.schedule_pass()
    assert rt.tasks.get(tid).reason == "no pools are registered"
    add_gateway(rt)
    big = rt.tasks.submit(make_spec(resources={"cpu_cores": 64}), "alice")[0]
    rt.placer.schedule_pass()
    assert "no machine has 64 CPU cores" in (rt.tasks.get(big).reason or "")
    assert row_of(rt, tid).pool_cpi == "cn/acme/cpu"


def clocked(make_runtime: MakeRuntime, **settings: Any) -> tuple[NodeRuntime, FakeClock]:
    """A bootstrapped runtime whose services all read ``clock``, which only moves when told."""
    clock = FakeClock()
    rt = make_runtime(clock, **settings)
    rt.bootstrap()
    return rt, clock


def test_expired_lease_requeues_the_task(make_runtime: MakeRuntime) -> None:
    rt, clock = clocked(make_runtime)
    gw = add_gateway(rt)
    tid, lease = leased(rt, gw)
    clock.advance(29.9)
    assert rt.dispatch.expire() == 0  # not yet
    clock.advance(0.2)
    assert rt.dispatch.expire() == 1
    row = row_of(rt, tid)
    assert row.state == "QUEUED"
    assert row.pool_cpi is None and row.lease_id is None and row.lease_expires_at is None
    assert row.attempt == 1
    assert "expired" in row.reason and "re-queued" in row.reason
    with pytest.raises(Conflict):
        rt.dispatch.report(gw.gid, tid, TaskReport(lease_id=lease, state=TaskState.RUNNING))
    # It is placed and leased again, as attempt 2.
    rt.placer.schedule_pass()
    [again] = rt.dispatch.lease(gw.gid, 5)
    assert (again.task_id, again.attempt) == (tid, 2)
    assert again.lease_id != lease


def test_expiry_after_max_attempts_is_a_system_error(make_runtime: MakeRuntime) -> None:
    rt, clock = clocked(make_runtime, max_attempts=3, heartbeat_timeout_s=3600.0)
    gw = add_gateway(rt)
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    for attempt in (1, 2, 3):
        rt.placer.schedule_pass()
        [lt] = rt.dispatch.lease(gw.gid, 1)
        assert lt.attempt == attempt
        clock.advance(31)
        assert rt.dispatch.expire() == 1
    got = rt.tasks.get(tid)
    assert got.state is TaskState.SYSTEM_ERROR
    assert got.ended_at is not None and got.attempt == 3
    assert rt.placer.schedule_pass() == 0
    assert rt.dispatch.lease(gw.gid, 1) == []


def test_expiry_while_canceling_ends_canceled(make_runtime: MakeRuntime) -> None:
    rt, clock = clocked(make_runtime)
    gw = add_gateway(rt)
    tid, _ = leased(rt, gw)
    assert rt.tasks.cancel(tid) is TaskState.CANCELING
    clock.advance(31)
    assert rt.dispatch.expire() == 1
    assert state_of(rt, tid) is TaskState.CANCELED


def test_silent_pools_become_unhealthy(make_runtime: MakeRuntime) -> None:
    rt, clock = clocked(make_runtime)
    gw = add_gateway(rt)
    tid = rt.tasks.submit(make_spec(), "alice")[0]
    rt.placer.schedule_pass()
    clock.advance(59)
    assert rt.dispatch.expire() == 0
    clock.advance(2)
    assert rt.dispatch.expire() == 1
    assert rt.dispatch.pool_rows()[0].health == "unhealthy"
    row = row_of(rt, tid)
    assert row.pool_cpi is None and row.reason == "placed pool stopped heartbeating"
    # A heartbeat that leaves the pool out does not vouch for it; one that lists it does.
    rt.dispatch.heartbeat(gw.gid, Heartbeat())
    assert rt.dispatch.pool_rows()[0].health == "unhealthy"
    rt.dispatch.heartbeat(gw.gid, Heartbeat(pools=[PoolLive(label="cpu")]))
    assert rt.dispatch.pool_rows()[0].health == "healthy"


def test_extend_leases_after_restart(make_runtime: MakeRuntime) -> None:
    rt, clock = clocked(make_runtime)
    gw = add_gateway(rt)
    tid, lease = leased(rt, gw)
    before = row_of(rt, tid).lease_expires_at
    assert before is not None
    clock.advance(25)  # the node was down most of the lease's life
    restarted = make_runtime(clock)
    assert restarted.bootstrap().admin_token is None
    assert restarted.dispatch.extend_leases_after_restart() == 1
    after = row_of(restarted, tid).lease_expires_at
    assert after is not None and (after - before).total_seconds() == 25
    clock.advance(10)  # past the first expiry, within the extended one
    assert restarted.dispatch.expire() == 0
    assert state_of(restarted, tid) is TaskState.INITIALIZING
    rep = TaskReport(lease_id=lease, state=TaskState.RUNNING)
    restarted.dispatch.report(gw.gid, tid, rep)
    assert state_of(restarted, tid) is TaskState.RUNNING


def test_preempted_report_does_not_lose_the_task(rt: NodeRuntime) -> None:
    gw = add_gateway(rt)
    tid, lease = leased(rt, gw)
    refused = False
    try:
        rt.dispatch.report(gw.gid, tid, TaskReport(lease_id=lease, state=TaskState.PREEMPTED))
    except (InvalidInput, Conflict):
        refused = True
    assert refused or state_of(rt, tid) is TaskState.QUEUED


def test_order_survives_a_restart_with_the_clock_behind(
    make_runtime: MakeRuntime, rt: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    now_ns = time.time_ns()
    monkeypatch.setattr(tasks_module, "time", SimpleNamespace(time_ns=lambda: now_ns))
    first = rt.tasks.submit(make_spec(), "alice")[0]
    # The node restarts; meanwhile NTP stepped the clock back by one second.
    monkeypatch.setattr(tasks_module, "time", SimpleNamespace(time_ns=lambda: now_ns - 10**9))
    restarted = make_runtime()
    restarted.bootstrap()
    second = restarted.tasks.submit(make_spec(), "alice")[0]
    listed = [x.id for x in restarted.tasks.list(scope=Visibility(owner="alice")).tasks]
    assert listed == [second, first]  # newest first


# ---- exact amounts ------------------------------------------------------------------------


def test_usage_decimals_round_trip_exactly(rt: NodeRuntime) -> None:
    h100 = Accelerator(vendor="nvidia", model="nvidia-h100-sxm", memory_mib=81559, count=8)
    pool = PoolSpec(label="h100", cpu_cores=64, memory_mib=1024 * 1024, accelerator=h100)
    gw = add_gateway(rt, pools=[pool])
    tid, lease = leased(rt, gw, resources={"accelerator": {"count": 2}})
    wall = Decimal("0.123456789")
    usage = UsageReport(
        wall_s=wall, cpu_cores=7, memory_mib=12345, cards=2, accelerator_model="nvidia-h100-sxm"
    )
    rep = TaskReport(lease_id=lease, state=TaskState.COMPLETE, usage=usage)
    rt.dispatch.report(gw.gid, tid, rep)
    need = TaskSpec.model_validate(row_of(rt, tid).spec).resources.need()
    want = measure_usage(  # what the task held, not what the gateway claimed
        wall_s=wall,
        cards=2,
        accelerator_model="nvidia-h100-sxm",
        cpu_cores=need.cpu_cores,
        memory_mib=need.memory_mib,
    )
    assert want.pflops_hours_fp16 is not None
    got = rt.tasks.get(tid).usage
    assert got is not None
    [u] = got
    for name in ("wall_s", "card_hours", "cpu_core_hours", "memory_gib_hours", "pflops_hours_fp16"):
        value = getattr(u, name)
        assert isinstance(value, Decimal)
        assert value == getattr(want, name)
        assert str(value) == str(getattr(want, name))  # same digits, same scale
    assert u.accelerator_model == "nvidia-h100-sxm" and u.cards == 2


def test_exact_decimal_keeps_thirty_digits(rt: NodeRuntime) -> None:
    rt.tasks.submit(make_spec(), "alice")
    tid = rt.tasks.list(page_size=1).tasks[0].id
    big = Decimal("123456789012345678901.123456789")
    tiny = Decimal("0.000000001")
    with rt.db.write() as s:
        s.add(
            t.UsageRecord(
                task_id=tid,
                attempt=1,
                pool_cpi="cn/acme/x",
                cards=0,
                wall_s=big,
                card_hours=tiny,
                cpu_core_hours=Decimal("0"),
                memory_gib_hours=Decimal("-1.5"),
                pflops_hours_fp16=None,
                created_at=datetime.now(UTC),
            )
        )
    with rt.db.read() as s:
        row = s.scalars(select(t.UsageRecord).where(t.UsageRecord.task_id == tid)).one()
    assert row.wall_s == big and isinstance(row.wall_s, Decimal)
    assert row.card_hours == tiny
    assert row.cpu_core_hours == 0
    assert row.memory_gib_hours == Decimal("-1.5")
    assert row.pflops_hours_fp16 is None
