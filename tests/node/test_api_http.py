"""The node's HTTP APIs (native, GA4GH TES, gateway) through FastAPI's TestClient.

Every bad input must get a clear 4xx JSON body ``{"error", "message", "status"}``, never a
500 or a traceback. The TestClient is used as a context manager, so the app's lifespan runs
and the scheduler loops are live.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from computenet.node.app import create_app
from computenet.node.auth import new_token
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from tesschema import SPEC_PATH

NODE = "cn.31"
MAX_BODY = 32 * 1024
ECHO = {"image": "alpine", "command": ["echo", "hi"]}
TES_SPEC = SPEC_PATH  # the spec, vendored under tests/data with its licence


@dataclass
class Api:
    client: TestClient
    rt: NodeRuntime
    admin: dict[str, str]
    user: dict[str, str]
    other_user: dict[str, str]

    def gateway(self, label: str = "acme") -> dict[str, str]:
        """Enrol a provider, then a gateway through the API; return its auth header."""
        r = self.client.post("/api/v1/providers", json={"label": label}, headers=self.admin)
        assert r.status_code == 201, r.text
        token = r.json()["enrolment_token"]
        r = self.client.post("/gateway/v1/enrol", json={"token": token, "name": f"{label}-gw"})
        assert r.status_code == 200, r.text
        assert r.json()["provider_prefix"] == f"{NODE}/{label}"
        return bearer(r.json()["credential"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def running_node(data_dir: Path) -> Iterator[Api]:
    rt = NodeRuntime(
        NodeSettings(data_dir=data_dir, node_code=NODE, max_body_bytes=MAX_BODY, housekeeping_s=0.2)
    )
    admin = rt.bootstrap().admin_token
    assert admin is not None
    user = new_token(rt.db, "user", "alice")
    other = new_token(rt.db, "user", "bob")
    # raise_server_exceptions=False: a crash must show up as the 500 the client would see.
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield Api(client, rt, bearer(admin), bearer(user), bearer(other))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """A fresh node for tests that look at what is stored."""
    with running_node(tmp_path) as node:
        yield node


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One node for the many bad-input cases, which must not change what is stored."""
    with running_node(tmp_path_factory.mktemp("shared-node")) as node:
        yield node


def assert_error(r: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    """A JSON error body of the one documented shape, mentioning ``needles``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert "Traceback" not in r.text
    body = r.json()
    assert isinstance(body, dict), body
    assert {"error", "message", "status"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    for needle in needles:
        assert needle in body["message"], body["message"]
    return body


def submit(api: Api, **fields: Any) -> str:
    r = api.client.post("/api/v1/tasks", json={"executors": [ECHO], **fields}, headers=api.user)
    assert r.status_code == 201, r.text
    tid: str = r.json()["id"]
    return tid


def tes_create(api: Api, **fields: Any) -> str:
    r = api.client.post(
        "/ga4gh/tes/v1/tasks", json={"executors": [ECHO], **fields}, headers=api.user
    )
    assert r.status_code == 200, r.text
    tid: str = r.json()["id"]
    return tid


JSON = {"Content-Type": "application/json"}


# ---- malformed and invalid bodies ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/ga4gh/tes/v1/tasks", "/api/v1/providers"])
@pytest.mark.parametrize("body", [b"{bad", b'{"executors": [', b"\xff\xfe", b"{'a': 1}"])
def test_malformed_json_is_a_400(shared: Api, path: str, body: bytes) -> None:
    r = shared.client.post(path, content=body, headers={**shared.admin, **JSON})
    assert_error(r, 400, "malformed JSON")


def test_malformed_json_on_the_gateway_protocol(api: Api) -> None:
    gw = api.gateway()
    r = api.client.post("/gateway/v1/heartbeat", content=b"{bad", headers={**gw, **JSON})
    assert_error(r, 400, "malformed JSON")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tasks", {"executors": [ECHO], "bogus": 1}, "bogus"),
        ("/api/v1/tasks", {"executors": [ECHO], "resources": {"gpus": 1}}, "resources.gpus"),
        ("/api/v1/tasks", {"executors": [{**ECHO, "cmd": "x"}]}, "executors.0.cmd"),
        ("/ga4gh/tes/v1/tasks", {"executors": [ECHO], "bogus": 1}, "bogus"),
        ("/ga4gh/tes/v1/tasks", {"executors": [ECHO], "resources": {"gpu": 1}}, "resources.gpu"),
    ],
)
def test_unknown_fields_are_named(shared: Api, path: str, body: dict[str, Any], field: str) -> None:
    body_out = assert_error(shared.client.post(path, json=body, headers=shared.user), 400)
    assert f"unknown field '{field}'" in body_out["message"]
    assert body_out["error"] == "invalid_input"


@pytest.mark.parametrize(
    "resources",
    [
        {"cpu_cores": 0},
        {"cpu_cores": -1},
        {"cpu_cores": 10**9},
        {"cpu_cores": 10**30},
        {"ram_gb": -1},
        {"ram_gb": 0},
        {"ram_gb": 10**12},
        {"disk_gb": -5},
        {"time_limit_s": 0},
        {"accelerator": {"count": 0}},
        {"accelerator": {"count": 100000}},
    ],
)
def test_negative_and_absurd_resources_native(shared: Api, resources: dict[str, Any]) -> None:
    body = {"executors": [ECHO], "resources": resources}
    r = shared.client.post("/api/v1/tasks", json=body, headers=shared.user)
    assert_error(r, 400, "resources.")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_memory_is_refused(shared: Api, literal: bytes) -> None:
    body = b'{"executors": [{"command": ["true"]}], "resources": {"ram_gb": ' + literal + b"}}"
    r = shared.client.post("/api/v1/tasks", content=body, headers={**shared.user, **JSON})
    assert_error(r, 400, "ram_gb")


@pytest.mark.parametrize(
    "resources", [{"cpu_cores": 0}, {"cpu_cores": -3}, {"ram_gb": -1}, {"disk_gb": 1e30}]
)
def test_negative_and_absurd_resources_tes(shared: Api, resources: dict[str, Any]) -> None:
    body = {"executors": [ECHO], "resources": resources}
    r = shared.client.post("/ga4gh/tes/v1/tasks", json=body, headers=shared.user)
    assert_error(r, 400)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"{}",
        b'{"executors": []}',
        b'{"executors": "echo"}',
        b'{"executors": [{"command": []}]}',
        b'{"executors": [{"command": [""]}]}',
        b'{"executors": [{"command": ["a"]}], "inputs": [{"path": "/a"}]}',
        b'{"executors": [{"command": ["a"]}], "placement": {"regions": ["3"]}}',
        b'{"executors": [{"command": ["a"]}], "placement": {"pool": "no-slashes"}}',
        b'{"executors": [{"command": ["a"]}], "placement": {"policy": "quickest"}}',
    ],
)
def test_invalid_native_bodies_are_400(shared: Api, body: bytes) -> None:
    r = shared.client.post("/api/v1/tasks", content=body, headers={**shared.user, **JSON})
    assert_error(r, 400)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"executors": [{"command": ["a"]}]},  # TES requires an image
        {"executors": [ECHO], "inputs": [{"path": "/a"}]},  # neither url nor content
        {"executors": [ECHO], "outputs": [{"path": "/a"}]},
    ],
)
def test_invalid_tes_bodies_are_400(shared: Api, body: dict[str, Any]) -> None:
    r = shared.client.post("/ga4gh/tes/v1/tasks", json=body, headers=shared.user)
    assert_error(r, 400)


def test_gateway_protocol_bodies_are_validated(api: Api) -> None:
    gw = api.gateway()
    bad_pool = {"pools": [{"label": "Bad_Label", "cpu_cores": 1, "memory_mib": 1}]}
    assert_error(api.client.put("/gateway/v1/pools", json=bad_pool, headers=gw), 400, "label")
    assert_error(api.client.put("/gateway/v1/pools", json={"pools": []}, headers=gw), 400)
    r = api.client.post("/gateway/v1/lease", json={"wait_s": 3600}, headers=gw)
    assert_error(r, 400, "wait_s")
    r = api.client.post("/gateway/v1/heartbeat", json={"leases": "x"}, headers=gw)
    assert_error(r, 400, "leases")
    r = api.client.post(
        "/gateway/v1/tasks/cn.31-nope/report",
        json={"lease_id": "x", "state": "DONE"},
        headers=gw,
    )
    assert_error(r, 400, "state")
    r = api.client.post("/gateway/v1/enrol", json={"token": "short", "name": "x"})
    assert_error(r, 400, "token")


# ---- not found, resolution -----------------------------------------------------------------


def test_unknown_task_ids_are_404(shared: Api) -> None:
    for method, path in [
        ("GET", "/api/v1/tasks/cn.31-nope"),
        ("POST", "/api/v1/tasks/cn.31-nope/cancel"),
        ("GET", "/ga4gh/tes/v1/tasks/cn.31-nope"),
        ("POST", "/ga4gh/tes/v1/tasks/cn.31-nope:cancel"),
    ]:
        assert_error(shared.client.request(method, path, headers=shared.user), 404, "cn.31-nope")


def test_other_users_tasks_are_invisible(api: Api) -> None:
    tid = submit(api)
    assert_error(api.client.get(f"/api/v1/tasks/{tid}", headers=api.other_user), 404)
    r = api.client.get("/ga4gh/tes/v1/tasks", headers=api.other_user)
    assert r.json() == {"tasks": []}
    assert api.client.get(f"/api/v1/tasks/{tid}", headers=api.admin).status_code == 200


def test_unknown_routes_are_json_404(shared: Api) -> None:
    assert_error(shared.client.get("/api/v1/nothing", headers=shared.user), 404)
    assert_error(shared.client.delete("/api/v1/tasks", headers=shared.user), 405)


@pytest.mark.parametrize("cpi", ["cn.44/acme/a100", "cn.3/acme/a100", "cn/acme/a100"])
def test_resolve_outside_the_prefix_is_400(shared: Api, cpi: str) -> None:
    r = shared.client.get(f"/api/v1/resolve/{cpi}", headers=shared.user)
    assert_error(r, 400, "outside this node's prefix")


@pytest.mark.parametrize(
    ("cpi", "needle"),
    [
        ("cn.31/acme", "three parts"),
        ("cn.31/acme/a100/extra", "three parts"),
        ("cn.31/ACME/a100", "provider label"),
        ("cn.31/acme/-a100", "pool label"),
        ("cn.31/ac_me/a100", "provider label"),
        ("CN.31/acme/a100", "node code"),
    ],
)
def test_resolve_malformed_cpi_is_400(shared: Api, cpi: str, needle: str) -> None:
    r = shared.client.get(f"/api/v1/resolve/{cpi}", headers=shared.user)
    assert_error(r, 400, needle)


def test_resolve_registered_and_unknown(api: Api) -> None:
    gw = api.gateway()
    pools = {"pools": [{"label": "a100", "cpu_cores": 8, "memory_mib": 65536}]}
    r = api.client.put("/gateway/v1/pools", json=pools, headers=gw)
    assert r.status_code == 200, r.text
    assert r.json()["cpis"] == {"a100": "cn.31/acme/a100"}
    r = api.client.get("/api/v1/resolve/cn.31/acme/a100", headers=api.user)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cpi"] == "cn.31/acme/a100" and body["served_by"] == NODE
    assert body["record"]["spec"]["cpu_cores"] == 8
    r = api.client.get("/api/v1/resolve/cn.31/acme/h100", headers=api.user)
    assert_error(r, 404, "cn.31/acme/h100")
    r = api.client.get("/api/v1/resolve/cn.31.ai/acme/h100", headers=api.user)
    assert_error(r, 404)


# ---- authentication and authorization ----------------------------------------------------

PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/node", None),
    ("GET", "/api/v1/tasks", None),
    ("POST", "/api/v1/tasks", {"executors": [ECHO]}),
    ("GET", "/api/v1/pools", None),
    ("GET", "/ga4gh/tes/v1/tasks", None),
    ("POST", "/ga4gh/tes/v1/tasks", {"executors": [ECHO]}),
    ("GET", "/ga4gh/tes/v1/tasks/cn.31-x", None),
    ("POST", "/gateway/v1/heartbeat", {}),
    ("PUT", "/gateway/v1/pools", {"pools": []}),
    ("POST", "/gateway/v1/lease", {"wait_s": 0}),
    ("POST", "/gateway/v1/tasks/cn.31-x/report", {"lease_id": "x", "state": "RUNNING"}),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer cnu_wrong"}, "invalid token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "invalid token"),  # user:pw, pw a token
        ({"Authorization": "Basic dXNlcg=="}, "Bearer <token>"),  # no password
        ({"Authorization": "Digest x"}, "Bearer <token>"),
        ({"Authorization": "Bearer"}, "Bearer <token>"),
    ],
)
def test_missing_or_wrong_tokens_are_401(
    shared: Api, method: str, path: str, body: Any, headers: dict[str, str], needle: str
) -> None:
    r = shared.client.request(method, path, json=body, headers=headers)
    body_out = assert_error(r, 401, needle)
    assert body_out["error"] == "unauthorized"


def test_enrolment_tokens_are_not_bearer_tokens(api: Api) -> None:
    r = api.client.post("/api/v1/providers", json={"label": "acme"}, headers=api.admin)
    token = r.json()["enrolment_token"]
    assert_error(api.client.get("/api/v1/tasks", headers=bearer(token)), 401)
    ok = api.client.post("/gateway/v1/enrol", json={"token": token, "name": "gw"})
    assert ok.status_code == 200
    again = api.client.post("/gateway/v1/enrol", json={"token": token, "name": "gw"})
    assert_error(again, 401, "already used")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/tasks", None),
        ("POST", "/api/v1/tasks", {"executors": [ECHO]}),
        ("GET", "/api/v1/node", None),
        ("GET", "/api/v1/pools", None),
        ("GET", "/ga4gh/tes/v1/tasks", None),
        ("POST", "/ga4gh/tes/v1/tasks", {"executors": [ECHO]}),
        ("POST", "/api/v1/providers", {"label": "x"}),
    ],
)
def test_gateway_token_on_user_routes_is_403(
    shared: Api, method: str, path: str, body: Any
) -> None:
    gw = shared.gateway()
    r = shared.client.request(method, path, json=body, headers=gw)
    assert_error(r, 403, "gateway token")


def test_user_token_on_gateway_and_admin_routes_is_403(shared: Api) -> None:
    for method, path, body in [
        ("POST", "/gateway/v1/heartbeat", {}),
        ("POST", "/gateway/v1/lease", {"wait_s": 0}),
        ("POST", "/api/v1/providers", {"label": "x"}),
        ("GET", "/api/v1/providers", None),
    ]:
        r = shared.client.request(method, path, json=body, headers=shared.user)
        assert_error(r, 403, "user token")


# ---- limits ------------------------------------------------------------------------------


def test_oversized_body_is_413(api: Api) -> None:
    body = {"executors": [ECHO], "description": "x" * (MAX_BODY + 1)}
    r = api.client.post("/api/v1/tasks", json=body, headers=api.user)
    assert_error(r, 413, str(MAX_BODY))
    r = api.client.post("/ga4gh/tes/v1/tasks", json=body, headers=api.user)
    assert_error(r, 413)
    assert api.client.get("/api/v1/tasks", headers=api.user).json()["tasks"] == []


def test_oversized_chunked_body_is_413(shared: Api) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    r = shared.client.post("/api/v1/tasks", content=chunks(), headers={**shared.user, **JSON})
    assert_error(r, 413)


def test_oversized_chunked_body_is_refused_cleanly(shared: Api) -> None:
    """Whatever the status, a chunked oversized body is refused with a JSON 4xx."""

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    r = shared.client.post("/api/v1/tasks", content=chunks(), headers={**shared.user, **JSON})
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code)


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/ga4gh/tes/v1/tasks"])
@pytest.mark.parametrize("size", ["0", "-1", "5000", "2048", "abc"])
def test_bad_page_size_is_400(shared: Api, path: str, size: str) -> None:
    r = shared.client.get(path, params={"page_size": size}, headers=shared.user)
    assert_error(r, 400, "page_size")


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/ga4gh/tes/v1/tasks"])
@pytest.mark.parametrize("token", ["abc", "1.5", "x" * 65])
def test_bad_page_token_is_400(shared: Api, path: str, token: str) -> None:
    r = shared.client.get(path, params={"page_token": token}, headers=shared.user)
    assert_error(r, 400, "page_token")


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/ga4gh/tes/v1/tasks"])
def test_huge_page_token_is_400(shared: Api, path: str) -> None:
    r = shared.client.get(path, params={"page_token": "9" * 30}, headers=shared.user)
    assert_error(r, 400, "page_token")


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/ga4gh/tes/v1/tasks", {"view": "BOGUS"}, "view"),
        ("/ga4gh/tes/v1/tasks/cn.31-x", {"view": "BOGUS"}, "view"),
        ("/ga4gh/tes/v1/tasks", {"state": "DONE"}, "state"),
        ("/api/v1/tasks", {"view": "minimal"}, "view"),
        ("/api/v1/tasks/cn.31-x", {"view": "BOGUS"}, "view"),
        ("/api/v1/tasks", {"state": "DONE"}, "state"),
    ],
)
def test_bad_query_values_are_400(
    shared: Api, path: str, params: dict[str, str], needle: str
) -> None:
    assert_error(shared.client.get(path, params=params, headers=shared.user), 400, needle)


def test_bad_idempotency_keys_are_400(shared: Api) -> None:
    for key in ("", "k" * 300):
        r = shared.client.post(
            "/api/v1/tasks",
            json={"executors": [ECHO]},
            headers={**shared.user, "Idempotency-Key": key},
        )
        assert_error(r, 400)


# ---- TES backend_parameters -----------------------------------------------------------------


def test_tes_strict_backend_parameters_refuse_unknown_keys(api: Api) -> None:
    resources = {"backend_parameters": {"VmSize": "D64"}, "backend_parameters_strict": True}
    r = api.client.post(
        "/ga4gh/tes/v1/tasks",
        json={"executors": [ECHO], "resources": resources},
        headers=api.user,
    )
    assert_error(r, 400, "VmSize", "backend_parameters_strict")
    assert api.client.get("/ga4gh/tes/v1/tasks", headers=api.user).json() == {"tasks": []}


def test_tes_backend_parameters_map_to_extensions(api: Api) -> None:
    params = {
        "accelerator_vendor": "nvidia",
        "accelerator_model": "nvidia-h100-sxm",
        "accelerator_count": "2",
        "accelerator_min_memory_gib": "80",
        "time_limit_s": "3600",
        "regions": "31, 32",
        "regions_deny": "44",
        "policy": "cheapest",
        "max_price_per_card_hour": "12.50",
        "priority": "7",
        "pool": "cn.31/acme/h100",
    }
    resources = {"backend_parameters": params, "backend_parameters_strict": True}
    tid = tes_create(api, resources=resources)
    spec = api.client.get(f"/api/v1/tasks/{tid}", headers=api.user).json()["spec"]
    assert spec["resources"]["accelerator"] == {
        "vendor": "nvidia",
        "model": "nvidia-h100-sxm",
        "count": 2,
        "min_memory_gib": 80,
    }
    assert spec["resources"]["time_limit_s"] == 3600
    place = spec["placement"]
    assert place["regions"] == ["31", "32"] and place["regions_deny"] == ["44"]
    assert place["policy"] == "cheapest" and place["priority"] == 7
    assert place["pool"] == "cn.31/acme/h100"
    assert place["max_price_per_card_hour"] == "12.50"


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"accelerator_count": "two"}, "backend_parameters"),
        ({"time_limit_s": "soon"}, "backend_parameters"),
        ({"time_limit_s": "0"}, "time_limit_s"),
        ({"priority": "high"}, "backend_parameters"),
        ({"priority": "100000"}, "priority"),
        ({"policy": "quickest"}, "backend_parameters"),
        ({"max_price_per_card_hour": "cheap"}, "backend_parameters"),
        ({"max_price_per_card_hour": "-1"}, "max_price_per_card_hour"),
        ({"max_price_per_card_hour": "NaN"}, "max_price_per_card_hour"),
        ({"regions": "3"}, "GB/T 2260"),
        ({"pool": "not-a-cpi"}, "three parts"),
    ],
)
def test_tes_bad_backend_parameter_values_are_400(
    shared: Api, params: dict[str, str], needle: str
) -> None:
    r = shared.client.post(
        "/ga4gh/tes/v1/tasks",
        json={"executors": [ECHO], "resources": {"backend_parameters": params}},
        headers=shared.user,
    )
    assert_error(r, 400, needle)


@pytest.mark.parametrize(
    "params",
    [
        {"accelerator_count": "0"},
        {"accelerator_count": "100000"},
        {"accelerator_min_memory_gib": "0"},
        {"accelerator_count": "two"},
    ],
)
def test_tes_bad_accelerator_parameters_are_400(shared: Api, params: dict[str, str]) -> None:
    r = shared.client.post(
        "/ga4gh/tes/v1/tasks",
        json={"executors": [ECHO], "resources": {"backend_parameters": params}},
        headers=shared.user,
    )
    assert_error(r, 400)


def test_tes_unsupported_backend_parameters_are_not_returned(api: Api) -> None:
    resources = {"backend_parameters": {"VmSize": "D64", "accelerator_foo": "x", "priority": "3"}}
    tid = tes_create(api, resources=resources)
    task = api.client.get(
        f"/ga4gh/tes/v1/tasks/{tid}", params={"view": "BASIC"}, headers=api.user
    ).json()
    assert task["resources"]["backend_parameters"] == {"priority": "3"}


def test_tes_backend_parameter_keys_are_case_insensitive(api: Api) -> None:
    resources = {
        "backend_parameters": {"ACCELERATOR_COUNT": "2"},
        "backend_parameters_strict": True,
    }
    tid = tes_create(api, resources=resources)
    spec = api.client.get(f"/api/v1/tasks/{tid}", headers=api.user).json()["spec"]
    assert spec["resources"]["accelerator"]["count"] == 2


# ---- happy paths: native ----------------------------------------------------------------------


def test_node_info(api: Api) -> None:
    r = api.client.get("/api/v1/node", headers=api.user)
    assert r.status_code == 200
    assert r.json()["code"] == NODE and r.json()["gateway_protocol"] == 1
    assert api.client.get("/healthz").json() == {"status": "ok", "node": NODE}


def test_native_submit_is_idempotent_with_a_key(api: Api) -> None:
    body = {"executors": [ECHO], "name": "once"}
    headers = {**api.user, "Idempotency-Key": "abc-123"}
    first = api.client.post("/api/v1/tasks", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True
    again = api.client.post("/api/v1/tasks", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"id": first.json()["id"], "created": False}
    other = api.client.post("/api/v1/tasks", json={**body, "name": "twice"}, headers=headers)
    assert_error(other, 409, "abc-123")
    # The same key through TES maps to the same task too.
    tes = api.client.post("/ga4gh/tes/v1/tasks", json={"executors": [ECHO]}, headers=headers)
    assert_error(tes, 409)
    tasks = api.client.get("/api/v1/tasks", headers=api.user).json()["tasks"]
    assert [t["id"] for t in tasks] == [first.json()["id"]]


def test_native_get_list_cancel(api: Api) -> None:
    tid = submit(api, name="job", tags={"k": "v"})
    r = api.client.get(f"/api/v1/tasks/{tid}", headers=api.user)
    assert r.status_code == 200
    task = r.json()
    assert task["id"] == tid and task["name"] == "job"
    assert task["spec"]["tags"] == {"k": "v"}
    assert task["events"][0]["state"] == "QUEUED"
    minimal = api.client.get(
        f"/api/v1/tasks/{tid}", params={"view": "MINIMAL"}, headers=api.user
    ).json()
    assert set(minimal) == {"id", "state"}
    page = api.client.get("/api/v1/tasks", params={"page_size": 1}, headers=api.user).json()
    assert [t["id"] for t in page["tasks"]] == [tid]
    assert "next_page_token" not in page
    r = api.client.post(f"/api/v1/tasks/{tid}/cancel", headers=api.user)
    assert r.json() == {"id": tid, "state": "CANCELED"}
    r = api.client.get("/api/v1/tasks", params={"state": "CANCELED"}, headers=api.user)
    assert [t["id"] for t in r.json()["tasks"]] == [tid]


def test_pagination_over_http(api: Api) -> None:
    ids = [submit(api) for _ in range(7)]
    for path in ("/api/v1/tasks", "/ga4gh/tes/v1/tasks"):
        seen: list[str] = []
        params: dict[str, Any] = {"page_size": 3}
        while True:
            page = api.client.get(path, params=params, headers=api.user).json()
            seen += [t["id"] for t in page["tasks"]]
            if "next_page_token" not in page:
                break
            params["page_token"] = page["next_page_token"]
        assert seen == list(reversed(ids))


def test_tes_tag_filters(api: Api) -> None:
    a = tes_create(api, tags={"team": "a"})
    b = tes_create(api, tags={"team": "b", "env": "prod"})
    tes_create(api)

    def ids(params: list[tuple[str, str]]) -> set[str]:
        r = api.client.get("/ga4gh/tes/v1/tasks", params=params, headers=api.user)
        assert r.status_code == 200, r.text
        return {t["id"] for t in r.json()["tasks"]}

    assert ids([("tag_key", "team"), ("tag_value", "a")]) == {a}
    assert ids([("tag_key", "team")]) == {a, b}
    assert ids([("tag_key", "team"), ("tag_value", "b"), ("tag_key", "env")]) == {b}
    assert ids([("tag_key", "team"), ("tag_value", "c")]) == set()


def test_providers_and_pools_listing(api: Api) -> None:
    gw = api.gateway()
    api.client.put(
        "/gateway/v1/pools",
        json={"pools": [{"label": "cpu", "cpu_cores": 2, "memory_mib": 4096}]},
        headers=gw,
    )
    providers = api.client.get("/api/v1/providers", headers=api.admin).json()
    assert providers == [{"prefix": "cn.31/acme", "name": "acme"}]
    pools = api.client.get("/api/v1/pools", headers=api.user).json()
    assert [p["cpi"] for p in pools] == ["cn.31/acme/cpu"]
    bad = api.client.post("/api/v1/providers", json={"label": "Bad_Label"}, headers=api.admin)
    assert_error(bad, 400, "provider label")


# ---- happy paths: TES -----------------------------------------------------------------------


def test_tes_service_info(api: Api) -> None:
    r = api.client.get("/ga4gh/tes/v1/service-info")
    assert r.status_code == 200
    info = r.json()
    assert info["type"]["artifact"] == "tes"
    assert info["type"]["group"] == "org.ga4gh"
    params = info["tesResources_backend_parameters"]
    assert isinstance(params, list) and "accelerator_model" in params
    assert params == sorted(params)
    for key in ("id", "name", "organization", "version"):
        assert key in info


def test_tes_create_and_views(api: Api) -> None:
    tid = tes_create(
        api,
        name="tes-job",
        inputs=[{"path": "/in/a.txt", "content": "secret input"}],
        resources={"cpu_cores": 2, "ram_gb": 2.5},
        tags={"wf": "1"},
    )
    url = f"/ga4gh/tes/v1/tasks/{tid}"
    default = api.client.get(url, headers=api.user).json()
    minimal = api.client.get(url, params={"view": "MINIMAL"}, headers=api.user).json()
    assert default == minimal
    assert set(minimal) == {"id", "state"}
    assert minimal["id"] == tid and minimal["state"] == "QUEUED"

    basic = api.client.get(url, params={"view": "BASIC"}, headers=api.user).json()
    assert basic["name"] == "tes-job"
    assert basic["resources"]["cpu_cores"] == 2 and basic["resources"]["ram_gb"] == 2.5
    assert basic["executors"][0]["image"] == "alpine"
    assert basic["tags"] == {"wf": "1"}
    assert "content" not in basic["inputs"][0]
    assert "creation_time" in basic
    full = api.client.get(url, params={"view": "FULL"}, headers=api.user).json()
    assert full["inputs"][0]["content"] == "secret input"
    r = api.client.post(f"/ga4gh/tes/v1/tasks/{tid}:cancel", headers=api.user)
    assert r.status_code == 200 and r.json() == {}
    again = api.client.get(url, headers=api.user).json()
    assert again["state"] == "CANCELED"


def run_task_through_a_gateway(api: Api, *, finish: bool = True) -> str:
    """Submit over TES, lease and report over the gateway protocol; return the task id."""
    gw = api.gateway()
    pools = {"pools": [{"label": "cpu", "cpu_cores": 4, "memory_mib": 16384}]}
    assert api.client.put("/gateway/v1/pools", json=pools, headers=gw).status_code == 200
    tid = tes_create(api, name="run", inputs=[{"path": "/in", "content": "data"}])
    deadline = time.monotonic() + 10
    leased: list[dict[str, Any]] = []
    while not leased and time.monotonic() < deadline:
        r = api.client.post("/gateway/v1/lease", json={"wait_s": 2}, headers=gw)
        assert r.status_code == 200, r.text
        leased = r.json()["tasks"]
    [lt] = leased
    assert lt["task_id"] == tid and lt["attempt"] == 1
    report = f"/gateway/v1/tasks/{tid}/report"
    running = {
        "lease_id": lt["lease_id"],
        "state": "RUNNING",
        "executors": [
            {
                "index": 0,
                "start_time": "2025-01-02T03:04:05Z",
                "stdout": {"offset": 0, "data": "hello\n"},
            }
        ],
    }
    assert api.client.post(report, json=running, headers=gw).status_code == 200
    if finish:
        done = {
            "lease_id": lt["lease_id"],
            "state": "COMPLETE",
            "executors": [
                {
                    "index": 0,
                    "end_time": "2025-01-02T03:05:05Z",
                    "exit_code": 0,
                    "stdout": {"offset": 6, "data": "bye\n"},
                    "stderr": {"offset": 0, "data": "warn\n"},
                }
            ],
            "usage": {"wall_s": "0.5", "cpu_cores": 1, "memory_mib": 954, "cards": 0},
        }
        r = api.client.post(report, json=done, headers=gw)
        assert r.status_code == 200 and r.json() == {"cancel": False}
        stale = {**done, "lease_id": "01STALE"}
        assert_error(api.client.post(report, json=stale, headers=gw), 409, "no longer held")
    return tid


def test_full_flow_over_http(api: Api) -> None:
    tid = run_task_through_a_gateway(api)
    url = f"/ga4gh/tes/v1/tasks/{tid}"
    full = api.client.get(url, params={"view": "FULL"}, headers=api.user).json()
    assert full["state"] == "COMPLETE"
    [log] = full["logs"]
    assert log["logs"][0]["stdout"] == "hello\nbye\n"
    assert log["logs"][0]["stderr"] == "warn\n"
    assert log["logs"][0]["exit_code"] == 0
    assert log["metadata"]["pool"] == "cn.31/acme/cpu"
    assert any("COMPLETE" in line for line in log["system_logs"])
    basic = api.client.get(url, params={"view": "BASIC"}, headers=api.user).json()
    [blog] = basic["logs"]
    assert "system_logs" not in blog
    assert all("stdout" not in e and "stderr" not in e for e in blog["logs"])
    native = api.client.get(f"/api/v1/tasks/{tid}", headers=api.user).json()
    assert native["usage"][0]["wall_s"] == "0.500000000"
    assert native["usage"][0]["pool"] == "cn.31/acme/cpu"


# ---- the TES schemas of the spec ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tes_schemas() -> dict[str, Any]:
    if not TES_SPEC.is_file():
        pytest.skip(
            f"TES OpenAPI spec not found at {TES_SPEC} (the repository vendors nothing "
            "from ../shared yet)"
        )
    with TES_SPEC.open() as f:
        doc = yaml.safe_load(f)
    # One resource for the whole document, so local '#/components/schemas/...' refs
    # resolve. tesServiceInfo's external $ref (service-info.yaml on GitHub) cannot be
    # fetched offline, so service-info is checked field by field above, not here.
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:tes", resource)
    return {"registry": registry}


def validate(schemas: dict[str, Any], name: str, instance: Any) -> list[str]:
    validator = Draft202012Validator(
        {"$ref": f"urn:tes#/components/schemas/{name}"}, registry=schemas["registry"]
    )
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def validate_view(schemas: dict[str, Any], name: str, instance: Any, view: str) -> list[str]:
    """Like ``validate``; for MINIMAL, forgive the one clash inside the TES spec itself: its
    ``view`` parameter says a MINIMAL task has only ``id`` and ``state``, while the
    ``tesTask`` schema lists ``executors`` as required."""
    errors = validate(schemas, name, instance)
    if view == "MINIMAL":
        errors = [e for e in errors if not e.endswith("'executors' is a required property")]
    return errors


def test_schema_validator_catches_bad_tasks(tes_schemas: dict[str, Any]) -> None:
    assert validate(tes_schemas, "tesTask", {"executors": [ECHO]}) == []
    assert validate(tes_schemas, "tesTask", {"state": "DONE", "executors": [ECHO]})
    assert validate(tes_schemas, "tesTask", {"executors": [{"image": "x"}]})
    assert validate(tes_schemas, "tesCreateTaskResponse", {})


def test_tes_responses_match_the_spec(api: Api, tes_schemas: dict[str, Any]) -> None:
    done = run_task_through_a_gateway(api)
    r = api.client.post(
        "/ga4gh/tes/v1/tasks",
        json={
            "name": "schema",
            "executors": [ECHO],
            "inputs": [{"path": "/in", "content": "inline data"}],
            "resources": {"cpu_cores": 1, "backend_parameters": {"priority": "1"}},
        },
        headers=api.user,
    )
    assert validate(tes_schemas, "tesCreateTaskResponse", r.json()) == []
    for view in ("MINIMAL", "BASIC", "FULL"):
        for tid in (r.json()["id"], done):
            task = api.client.get(
                f"/ga4gh/tes/v1/tasks/{tid}", params={"view": view}, headers=api.user
            ).json()
            errors = validate_view(tes_schemas, "tesTask", task, view)
            assert errors == [], (view, json.dumps(task))
        page = api.client.get(
            "/ga4gh/tes/v1/tasks", params={"view": view, "page_size": 1}, headers=api.user
        ).json()
        assert "next_page_token" in page
        assert validate_view(tes_schemas, "tesListTasksResponse", page, view) == [], view
    assert validate(tes_schemas, "tesCancelTaskResponse", {}) == []
    minimal = validate(tes_schemas, "tesTask", {"id": done, "state": "COMPLETE"})
    assert minimal == [": 'executors' is a required property"]


def test_tes_full_view_of_a_running_task_matches_the_spec(
    api: Api, tes_schemas: dict[str, Any]
) -> None:
    tid = run_task_through_a_gateway(api, finish=False)
    task = api.client.get(
        f"/ga4gh/tes/v1/tasks/{tid}", params={"view": "FULL"}, headers=api.user
    ).json()
    assert task["state"] == "RUNNING"
    # The schema requires exit_code, so a running executor's log appears once it has ended
    # (docs/api.md). Nothing may deviate, and no field is null.
    assert validate(tes_schemas, "tesTask", task) == [], json.dumps(task)
    assert task["logs"][0]["logs"] == []
    assert "null" not in json.dumps(task)


def test_bad_inputs_left_nothing_behind(shared: Api) -> None:
    """Runs after the bad-input cases on the shared node: none of them stored a task."""
    for who in (shared.user, shared.other_user, shared.admin):
        r = shared.client.get("/api/v1/tasks", headers=who)
        assert r.status_code == 200 and r.json()["tasks"] == []


@pytest.mark.parametrize(
    "extra",
    [
        ({"inputs": [{"path": "/in", "url": "ftp://host/in"}]}, "scheme 'ftp' is not supported"),
        ({"inputs": [{"path": "/in", "url": "relative/in"}]}, "must be scheme://"),
        ({"outputs": [{"path": "/o", "url": "https://h/o"}]}, "scheme 'https' is not supported"),
        ({"outputs": [{"path": "/../o", "url": "s3://b/o"}]}, "must not contain '..'"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/tasks", "/ga4gh/tes/v1/tasks"])
def test_unstageable_data_is_refused(
    shared: Api, path: str, extra: tuple[dict[str, Any], str]
) -> None:
    body, why = extra
    r = shared.client.post(path, json={"executors": [ECHO], **body}, headers=shared.user)
    assert_error(r, 400, why)


@pytest.mark.parametrize(
    "executor",
    [
        {"image": "alpine", "command": ["cat", "x"], "workdir": "../../.."},
        {"image": "alpine", "command": ["cat"], "stdin": "/w/../../etc/passwd"},
        {"image": "alpine", "command": ["true"], "env": {"A=B": "x"}},
        {"image": "alpine", "command": ["true"], "env": {"A": "x\u0000y"}},
    ],
)
def test_paths_and_env_that_escape_are_refused(shared: Api, executor: dict[str, Any]) -> None:
    r = shared.client.post(
        "/ga4gh/tes/v1/tasks", json={"executors": [executor]}, headers=shared.user
    )
    assert_error(r, 400)


@pytest.mark.parametrize("bad", ['"\\ud800"', '"a\\u0000b"'])
def test_unstorable_text_is_refused(shared: Api, bad: str) -> None:
    raw = '{"name": ' + bad + ', "executors": [{"command": ["echo", "hi"]}]}'
    r = shared.client.post("/api/v1/tasks", content=raw.encode(), headers={**shared.user, **JSON})
    assert_error(r, 400)


@pytest.mark.parametrize("tid", ["a\x00b", "x" * 300, "cn-../../etc"])
def test_malformed_task_ids_are_404(shared: Api, tid: str) -> None:
    r = shared.client.get(f"/api/v1/tasks/{quote(tid)}", headers=shared.user)
    assert_error(r, 404)
