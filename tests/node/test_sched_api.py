"""Scheduling on a live node (in-process app, real store, scheduler loops running):
preemption re-queues spot work, variants rewrite the stored task, and the offers, explain and
datasets endpoints validate their input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api_http import JSON, Api, assert_error, running_node

from polling import wait_for

GPU_POOL = {
    "label": "gpu",
    "cpu_cores": 16,
    "memory_mib": 65536,
    "accelerator": {
        "vendor": "nvidia",
        "model": "nvidia-h100-sxm",
        "memory_mib": 81920,
        "count": 8,
    },
    "region": {"code": "31"},
    "price_per_card_hour": "30",
}
ASCEND_POOL = {
    **GPU_POOL,
    "label": "npu",
    "accelerator": {
        "vendor": "huawei",
        "model": "huawei-ascend-910b3",
        "memory_mib": 65536,
        "count": 8,
    },
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_node(tmp_path) as node:
        yield node


def _submit(api: Api, body: dict[str, Any]) -> str:
    r = api.client.post(
        "/api/v1/tasks", json={"executors": [{"command": ["true"]}], **body}, headers=api.user
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _task(api: Api, tid: str) -> dict[str, Any]:
    r = api.client.get(f"/api/v1/tasks/{tid}", headers=api.admin)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _explain(api: Api, tid: str) -> dict[str, Any]:
    r = api.client.get(f"/api/v1/tasks/{tid}/explain", headers=api.user)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_on_demand_work_preempts_a_leased_spot_task(api: Api) -> None:
    gw = api.gateway()
    assert api.client.put("/gateway/v1/pools", json={"pools": [GPU_POOL]}, headers=gw).is_success
    spot = _submit(api, {"resources": {"accelerator": {"count": 8}, "preemptible": True}})
    wait_for(lambda: _explain(api, spot)["pool"] == "cn.31/acme/gpu", 10, "spot placed")
    r = api.client.post("/gateway/v1/lease", json={"wait_s": 5}, headers=gw)
    [leased] = r.json()["tasks"]
    assert leased["task_id"] == spot
    on_demand = _submit(api, {"resources": {"accelerator": {"count": 8}}})
    wait_for(lambda: _explain(api, on_demand)["pool"] == "cn.31/acme/gpu", 10, "on-demand placed")
    again = _task(api, spot)
    assert again["state"] == "QUEUED"
    assert any("preempted by " + on_demand in e["message"] for e in again["events"])
    assert "preempted" in _explain(api, on_demand)["placement"]
    # the spot task's gateway learns at its next heartbeat that the lease is gone
    r = api.client.post("/gateway/v1/heartbeat", json={"leases": [leased["lease_id"]]}, headers=gw)
    assert r.json()["lost"] == [leased["lease_id"]]


def test_variants_rewrite_the_stored_task(api: Api) -> None:
    gw = api.gateway()
    assert api.client.put("/gateway/v1/pools", json={"pools": [ASCEND_POOL]}, headers=gw).is_success
    tid = _submit(
        api,
        {
            "variants": [
                {
                    "name": "cuda",
                    "accelerator": {"vendor": "nvidia", "count": 4},
                    "image": "t:cuda",
                },
                {
                    "name": "ascend",
                    "accelerator": {"vendor": "huawei", "count": 8},
                    "image": "t:cann",
                },
            ]
        },
    )
    wait_for(lambda: _explain(api, tid)["pool"] == "cn.31/acme/npu", 10, "the NPU variant placed")
    r = api.client.post("/gateway/v1/lease", json={"wait_s": 5}, headers=gw)
    [leased] = r.json()["tasks"]
    assert leased["spec"]["executors"][0]["image"] == "t:cann"
    assert leased["spec"]["resources"]["accelerator"]["count"] == 8
    assert leased["spec"]["variants"] == []
    assert "as variant 1 (ascend)" in _explain(api, tid)["placement"]


def test_offers_rank_and_validate(api: Api) -> None:
    gw = api.gateway()
    pools = {"pools": [GPU_POOL, ASCEND_POOL]}
    assert api.client.put("/gateway/v1/pools", json=pools, headers=gw).is_success
    r = api.client.get("/api/v1/offers", params={"vendor": "huawei", "count": 8}, headers=api.user)
    assert [o["pool"] for o in r.json()] == ["cn.31/acme/npu"]
    r = api.client.get(
        "/api/v1/offers", params={"count": 8, "accelerator": "H100"}, headers=api.user
    )
    assert [o["pool"] for o in r.json()] == ["cn.31/acme/gpu"]
    body = {"executors": [{"command": ["x"]}], "variants": [{"accelerator": {"vendor": "huawei"}}]}
    r = api.client.post("/api/v1/offers", json=body, headers=api.user)
    assert [(o["pool"], o["variant"]) for o in r.json()] == [("cn.31/acme/npu", 0)]
    for params, needle in (
        ({"max_price": "cheap"}, "offer query"),
        ({"region": "3"}, "GB/T 2260"),
        ({"policy": "quickest"}, "policy"),
        ({"count": "0"}, "count"),
    ):
        assert_error(api.client.get("/api/v1/offers", params=params, headers=api.user), 400, needle)


def test_explain_is_owner_scoped(api: Api) -> None:
    tid = _submit(api, {})
    assert_error(api.client.get(f"/api/v1/tasks/{tid}/explain", headers=api.other_user), 404)
    assert_error(api.client.get("/api/v1/tasks/cn.31-nope/explain", headers=api.user), 404)


def test_datasets_register_validate_and_belong_to_their_owner(api: Api) -> None:
    body = {"name": "genome", "size_bytes": 10**12, "regions": ["51"]}
    r = api.client.post("/api/v1/datasets", json=body, headers=api.user)
    assert r.status_code == 201 and r.json()["owner"] == "user:alice"
    r = api.client.get("/api/v1/datasets/genome", headers=api.other_user)
    assert r.json()["regions"] == ["51"]
    assert_error(api.client.post("/api/v1/datasets", json=body, headers=api.other_user), 409)
    r = api.client.post(
        "/api/v1/datasets", json={**body, "regions": ["51", "44"]}, headers=api.admin
    )
    assert r.status_code == 201 and r.json()["owner"] == "user:alice"
    assert [d["name"] for d in api.client.get("/api/v1/datasets", headers=api.user).json()] == [
        "genome"
    ]
    for bad, needle in (
        ({**body, "name": "../x"}, "dataset name"),
        ({**body, "regions": ["5"]}, "GB/T 2260"),
        ({**body, "regions": []}, "regions"),
        ({**body, "size_bytes": -1}, "size_bytes"),
    ):
        r = api.client.post("/api/v1/datasets", json=bad, headers={**api.user, **JSON})
        assert_error(r, 400, needle)
    assert_error(api.client.get("/api/v1/datasets/none", headers=api.user), 404)


def test_explain_says_when_a_card_has_no_speed_figure(api: Api) -> None:
    # The Ascend 910B2 has no citable FP16 figure: the node's explain passes the core's note on,
    # and the offer is flagged rather than scaled as if it were some other card.
    pool = {
        **ASCEND_POOL,
        "accelerator": {**ASCEND_POOL["accelerator"], "model": "huawei-ascend-910b2"},
    }
    gw = api.gateway()
    assert api.client.put("/gateway/v1/pools", json={"pools": [pool]}, headers=gw).is_success
    tid = _submit(
        api, {"resources": {"accelerator": {"count": 1}}, "placement": {"runtime_hint_s": 3600}}
    )
    wait_for(lambda: _explain(api, tid)["pool"] == "cn.31/acme/npu", 10, "placed")
    ex = _explain(api, tid)
    assert ex["speed_note"].startswith("speed unknown on 1 of 1 candidate pool")
    assert ex["candidates"][0]["speed_known"] is False
    assert ex["candidates"][0]["run_s"] == pytest.approx(3600)
