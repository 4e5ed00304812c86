"""The audit log (every state-changing call, append-only, queryable, exportable) and the
per-token rate limit (429 with Retry-After)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from computenet.errors import RateLimited
from computenet.node.app import create_app
from computenet.node.auth import new_token
from computenet.node.ratelimit import RateLimiter
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings

TASK = {"executors": [{"command": ["echo", "hi"]}]}


def _client(tmp_path: Path, **settings: float) -> Iterator[tuple[TestClient, NodeRuntime, str]]:
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path, node_code="cn.31", **settings))  # type: ignore[arg-type]
    admin = rt.bootstrap().admin_token
    assert admin is not None
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield client, rt, admin


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, NodeRuntime, str]]:
    yield from _client(tmp_path)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_state_changing_calls_are_audited_with_who_what_and_outcome(
    node: tuple[TestClient, NodeRuntime, str],
) -> None:
    client, rt, admin = node
    alice = new_token(rt.db, "user", "alice")
    ok = client.post("/api/v1/tasks", json=TASK, headers={**_auth(alice), "X-Request-ID": "r-1"})
    assert ok.status_code == 201
    task_id = ok.json()["id"]
    assert client.post(f"/api/v1/tasks/{task_id}/cancel", headers=_auth(alice)).status_code == 200
    assert client.post("/api/v1/tasks", json={"bogus": 1}, headers=_auth(alice)).status_code == 400
    assert client.post("/api/v1/tasks", json=TASK).status_code == 401
    assert client.get("/api/v1/tasks", headers=_auth(alice)).status_code == 200  # a read

    r = client.get("/api/v1/audit", headers=_auth(admin))
    assert r.status_code == 200
    rows = [(e["actor"], e["method"], e["path"], e["status"]) for e in r.json()["events"]]
    assert rows == [
        ("user:alice", "POST", "/api/v1/tasks", 201),
        ("user:alice", "POST", f"/api/v1/tasks/{task_id}/cancel", 200),
        ("user:alice", "POST", "/api/v1/tasks", 400),
        ("anonymous", "POST", "/api/v1/tasks", 401),
    ]
    first = r.json()["events"][0]
    assert first["request_id"] == "r-1" and first["client"].startswith("testclient")
    assert first["token_id"] and "cnu_" not in json.dumps(r.json())  # never the token itself


def test_audit_filters_paging_and_jsonl_export(node: tuple[TestClient, NodeRuntime, str]) -> None:
    client, rt, admin = node
    bob = new_token(rt.db, "user", "bob")
    for _ in range(3):
        client.post("/api/v1/tasks", json=TASK, headers=_auth(bob))
    client.post("/api/v1/providers", json={"label": "acme"}, headers=_auth(admin))

    page = client.get("/api/v1/audit", params={"limit": 2}, headers=_auth(admin)).json()
    assert len(page["events"]) == 2 and page["next_after_id"] == page["events"][1]["id"]
    rest = client.get(
        "/api/v1/audit", params={"after_id": page["next_after_id"]}, headers=_auth(admin)
    ).json()
    assert len(rest["events"]) == 2 and rest["next_after_id"] is None

    only_bob = client.get("/api/v1/audit", params={"actor": "user:bob"}, headers=_auth(admin))
    assert len(only_bob.json()["events"]) == 3
    providers = client.get(
        "/api/v1/audit", params={"path_prefix": "/api/v1/providers"}, headers=_auth(admin)
    )
    assert [e["actor"] for e in providers.json()["events"]] == ["admin:admin"]

    export = client.get("/api/v1/audit", params={"format": "jsonl"}, headers=_auth(admin))
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert len(lines) == 4 and all(set(x) >= {"at", "actor", "method", "path"} for x in lines)


def test_only_operators_read_the_audit_log(node: tuple[TestClient, NodeRuntime, str]) -> None:
    client, rt, _admin = node
    carol = new_token(rt.db, "user", "carol")
    r = client.get("/api/v1/audit", headers=_auth(carol))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    bad = client.get("/api/v1/audit", params={"limit": 10**9}, headers=_auth(_admin))
    assert bad.status_code == 400


def test_the_audit_table_refuses_updates_and_deletes(
    node: tuple[TestClient, NodeRuntime, str],
) -> None:
    client, rt, admin = node
    client.post("/api/v1/tasks", json=TASK, headers=_auth(admin))
    rt.audit.flush()
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), rt.db.write() as s:
            s.execute(text(statement))
    with rt.db.read() as s:
        assert s.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 1


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    for client, rt, admin in _client(tmp_path, rate_limit_per_s=2.0, rate_limit_burst=3.0):
        dave = new_token(rt.db, "user", "dave")
        codes = [client.get("/api/v1/tasks", headers=_auth(dave)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = client.get("/api/v1/tasks", headers=_auth(dave))
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # Each token has its own allowance.
        assert client.get("/api/v1/tasks", headers=_auth(admin)).status_code == 200


def test_token_bucket_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=2)
    limiter.take("k", now=0.0)
    limiter.take("k", now=0.0)
    with pytest.raises(RateLimited) as exc:
        limiter.take("k", now=0.0)
    assert exc.value.retry_after_s == pytest.approx(0.1)
    limiter.take("k", now=0.1)  # one token back after 1/rate seconds
    with pytest.raises(RateLimited):
        limiter.take("k", now=0.1)
    limiter.take("other", now=0.1)
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)
