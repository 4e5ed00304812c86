"""Issue 5 must-show 3 and issue 7 must-show 5, live: a real node, two real gateways whose
pools differ in accelerator, price and region, the CLI's --policy, find, dataset and explain."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nodeproc import Proc, admin_token, cli, free_port, start_gateway, start_node

pytestmark = pytest.mark.slow

FAST = "cn/fast/h100"  # 8 x H100 in Shanghai at 60 per card-hour
CHEAP = "cn/cheap/v100"  # 8 x V100 in Sichuan at 5 per card-hour


def _pool(label: str, model: str, region: str, price: str) -> dict[str, Any]:
    return {
        "label": label,
        "cpu_cores": 4,
        "memory_mib": 16384,
        "accelerator": {"vendor": "nvidia", "model": model, "memory_mib": 32768, "count": 8},
        "region": {"code": region},
        "price_per_card_hour": price,
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("placement")
    port = free_port()
    proc = start_node(base / "node", port)
    gateways: list[Proc] = []
    try:
        url = f"http://127.0.0.1:{port}"
        token = admin_token(proc)
        for provider, pool in (
            ("fast", _pool("h100", "nvidia-h100-sxm", "31", "60")),
            ("cheap", _pool("v100", "nvidia-v100-sxm2-32g", "51", "5")),
        ):
            spec = base / f"{provider}.json"
            spec.write_text(json.dumps([pool]))
            gateways.append(
                start_gateway(
                    url, token, base / provider, provider, None, "--pools-file", str(spec)
                )
            )
        env = {
            "COMPUTENET_URL": url,
            "COMPUTENET_TOKEN": token,
            "COMPUTENET_CONFIG": "/nonexistent",
        }
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pools = json.loads(cli("pools", "--json", env=env).stdout or '{"pools": []}')["pools"]
            if {p["cpi"] for p in pools} >= {FAST, CHEAP}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the two gateways' pools never appeared")
        yield env
    finally:
        for g in gateways:
            g.stop()
        proc.stop()


def _submit(env: dict[str, str], *args: str) -> str:
    res = cli("submit", "--gpus", "1", *args, "--", "true", env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _placed(env: dict[str, str], task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        res = cli("explain", "--json", task_id, env=env)
        assert res.returncode == 0, res.stderr
        ex: dict[str, Any] = json.loads(res.stdout)
        if ex["pool"]:
            return ex
        time.sleep(0.2)
    raise AssertionError(f"{task_id} was never placed")


def test_cheapest_and_fastest_place_the_same_task_differently(node: dict[str, str]) -> None:
    cheap = _submit(node, "--policy", "cheapest", "--runtime-hint-s", "36000")
    fast = _submit(node, "--policy", "fastest", "--runtime-hint-s", "36000")
    ex_cheap, ex_fast = _placed(node, cheap), _placed(node, fast)
    assert ex_cheap["pool"] == CHEAP
    assert ex_fast["pool"] == FAST
    # explain says why: the winner's estimate against the runner-up's
    by_pool = {c["pool"]: c for c in ex_cheap["candidates"]}
    assert by_pool[CHEAP]["chosen"] and by_pool[CHEAP]["cost"] < by_pool[FAST]["cost"]
    by_pool = {c["pool"]: c for c in ex_fast["candidates"]}
    assert by_pool[FAST]["chosen"] and by_pool[FAST]["run_s"] < by_pool[CHEAP]["run_s"] / 5
    text = cli("explain", fast, env=node).stdout
    assert FAST in text and CHEAP in text and "policy fastest" in text
    assert "placed on cn/fast/h100" in text and "2 of 2 pools" in text


def test_pending_task_explains_each_constraint(node: dict[str, str]) -> None:
    tid = _submit(node, "--gpu-model", "nvidia-h100-sxm", "--max-price", "10")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ex = json.loads(cli("explain", "--json", tid, env=node).stdout)
        if ex["reason"] and "waiting for the scheduler" not in ex["reason"]:
            break
        time.sleep(0.2)
    assert ex["pool"] is None and ex["eligible"] == 0
    assert ex["excluded"] == {"accelerator": 1, "price": 1}
    text = cli("explain", tid, env=node).stdout
    assert "accelerator vendor/model: excluded 1 pool\n" in text
    assert "price cap: excluded 1 pool\n" in text
    cli("cancel", tid, env=node)


def test_find_lists_ranked_offers(node: dict[str, str]) -> None:
    res = cli(
        "find", "--accelerator", "V100", "--count", "8", "--max-price", "10", "--json", env=node
    )
    assert res.returncode == 0, res.stderr
    offers = json.loads(res.stdout)
    assert [o["pool"] for o in offers] == [CHEAP]
    assert offers[0]["run_s"] > 0 and offers[0]["cost"] > 0 and offers[0]["carbon_g"] > 0
    ranked = json.loads(
        cli(
            "find", "--count", "8", "--vendor", "nvidia", "--policy", "fastest", "--json", env=node
        ).stdout
    )
    assert [o["pool"] for o in ranked] == [FAST, CHEAP]
    table = cli("find", "--vendor", "nvidia", "--policy", "cheapest", env=node).stdout
    assert table.index(CHEAP) < table.index(FAST)


def test_data_heavy_goes_to_the_data_compute_heavy_to_the_faster_pool(
    node: dict[str, str],
) -> None:
    add = cli("dataset", "add", "genome", "--size-gb", "2000", "--region", "51", env=node)
    assert add.returncode == 0, add.stderr
    shown = json.loads(cli("dataset", "show", "genome", "--json", env=node).stdout)
    assert shown["regions"] == ["51"] and shown["size_bytes"] == 2000 * 10**9
    assert "genome" in cli("dataset", "list", env=node).stdout
    data_heavy = _submit(node, "--dataset", "genome", "--runtime-hint-s", "3600")
    compute_heavy = _submit(node, "--dataset", "genome", "--runtime-hint-s", "360000")
    ex_data, ex_compute = _placed(node, data_heavy), _placed(node, compute_heavy)
    assert ex_data["pool"] == CHEAP  # next to the only replica
    assert ex_compute["pool"] == FAST  # the run time saved outweighs moving 2 TB
    for ex in (ex_data, ex_compute):
        transfer = {c["pool"]: c["transfer_s"] for c in ex["candidates"]}
        # 2 TB inside Sichuan at 10 Gbit/s vs across provinces at 1 Gbit/s
        assert 1500 < transfer[CHEAP] < 1700
        assert 15_000 < transfer[FAST] < 16_500
    text = cli("explain", data_heavy, env=node).stdout
    assert "transfer" in text and "4.4 h" in text  # 16,000 s to Shanghai, shown in hours
