"""TaskSpec validation: what a consumer may submit, and what is refused."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from computenet.model.pool import Capacity, Region
from computenet.model.task import (
    TERMINAL_STATES,
    AcceleratorRequest,
    Input,
    Placement,
    Policy,
    Resources,
    TaskSpec,
    TaskState,
)

ECHO: dict[str, Any] = {"command": ["echo", "hi"]}


def spec(**fields: Any) -> dict[str, Any]:
    return {"executors": [ECHO], **fields}


def errors_of(data: dict[str, Any]) -> list[ErrorDetails]:
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(data)
    return info.value.errors()


def test_minimal_spec_has_sane_defaults() -> None:
    s = TaskSpec.model_validate(spec())
    assert s.resources.cpu_cores == 1
    assert s.resources.ram_gb == 1.0
    assert s.resources.accelerator is None
    assert s.placement.policy is Policy.BALANCED
    assert s.max_price() is None
    assert s.executors[0].image == ""


def test_full_spec_is_accepted() -> None:
    s = TaskSpec.model_validate(
        spec(
            name="train",
            inputs=[{"path": "/data/in", "url": "s3://bucket/in"}],
            outputs=[{"path": "/data/out", "url": "s3://bucket/out"}],
            tags={"team": "a"},
            resources={
                "cpu_cores": 8,
                "ram_gb": 64,
                "disk_gb": 100,
                "accelerator": {"vendor": "nvidia", "count": 4, "min_memory_gib": 80},
                "time_limit_s": 3600,
            },
            placement={
                "regions": ["31", "3101", "310101"],
                "regions_deny": ["44"],
                "policy": "cheapest",
                "max_price_per_card_hour": "12.5",
                "priority": 10,
                "pool": "cn.31/acme/a100",
            },
        )
    )
    assert s.max_price() == Decimal("12.5")
    assert s.placement.policy is Policy.CHEAPEST
    assert s.resources.need() == Capacity(cpu_cores=8, memory_mib=61036, accelerators=4)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec(bogus=1), "bogus"),
        (spec(resources={"gpus": 1}), "gpus"),
        (spec(placement={"region": ["31"]}), "region"),
        ({"executors": [{**ECHO, "cmd": "x"}]}, "cmd"),
        (spec(inputs=[{"path": "/a", "content": "x", "mode": "r"}]), "mode"),
        (spec(resources={"accelerator": {"count": 1, "kind": "gpu"}}), "kind"),
    ],
)
def test_unknown_fields_are_refused(data: dict[str, Any], field: str) -> None:
    errs = errors_of(data)
    assert [e["type"] for e in errs] == ["extra_forbidden"]
    assert errs[0]["loc"][-1] == field


@pytest.mark.parametrize(
    "resources",
    [
        {"cpu_cores": 0},
        {"cpu_cores": -1},
        {"cpu_cores": 10**9},
        {"cpu_cores": 1.5},
        {"ram_gb": 0},
        {"ram_gb": -1},
        {"ram_gb": math.nan},
        {"ram_gb": math.inf},
        {"ram_gb": -math.inf},
        {"ram_gb": 10**9},
        {"disk_gb": -1},
        {"disk_gb": math.nan},
        {"disk_gb": 0},
        {"time_limit_s": 0},
        {"time_limit_s": -5},
        {"time_limit_s": 10**12},
        {"accelerator": {"count": 0}},
        {"accelerator": {"count": -2}},
        {"accelerator": {"count": 10**6}},
        {"accelerator": {"min_memory_gib": 0}},
    ],
)
def test_negative_and_absurd_resources_are_refused(resources: dict[str, Any]) -> None:
    errs = errors_of(spec(resources=resources))
    assert errs[0]["loc"][0] == "resources"


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_memory_is_refused_directly(value: float) -> None:
    with pytest.raises(ValidationError):
        Resources(ram_gb=value)


@pytest.mark.parametrize(
    "executors",
    [
        [],
        [{"command": []}],
        [{"command": [""]}],
        [{"command": ["", "x"]}],
        [{"command": ["echo", "a\x00b"]}],
        [{"image": "alpine"}],
    ],
)
def test_empty_or_bad_commands_are_refused(executors: list[dict[str, Any]]) -> None:
    errs = errors_of({"executors": executors})
    assert errs[0]["loc"][0] == "executors"


def test_command_error_messages_are_clear() -> None:
    msg = errors_of({"executors": [{"command": [""]}]})[0]["msg"]
    assert "must not be empty" in msg
    msg = errors_of({"executors": [{"command": ["a", "\x00"]}]})[0]["msg"]
    assert "NUL" in msg


def test_too_many_executors_are_refused() -> None:
    errors_of({"executors": [ECHO] * 65})


def test_input_needs_a_source_and_content_wins_over_url() -> None:
    assert Input(path="/a", url="s3://x").url == "s3://x"
    assert Input(path="/a", content="").content == ""
    # TES 1.1: "If content is not empty, url must be ignored".
    both = Input(path="/a", url="s3://x", content="y")
    assert (both.url, both.content) == (None, "y")
    empty = Input(path="/a", url="s3://x", content="")
    assert (empty.url, empty.content) == ("s3://x", None)
    # A bare absolute path is a file URL (TES allows it); the URL policy then judges it.
    assert Input(path="/a", url="/data/in.txt").url == "file:///data/in.txt"
    with pytest.raises(ValidationError, match="exactly one of 'url' or 'content'"):
        Input(path="/a")
    with pytest.raises(ValidationError):
        Input(path="", url="s3://x")


@pytest.mark.parametrize("code", ["11", "31", "3101", "310101"])
def test_good_region_codes(code: str) -> None:
    assert Placement(regions=[code], regions_deny=[code]).regions == [code]
    assert Region(code=code).code == code


@pytest.mark.parametrize("code", ["", "3", "311", "31010", "3101011", "sh", "31a", "-31", " 31"])
def test_bad_region_codes_are_refused(code: str) -> None:
    with pytest.raises(ValidationError, match="GB/T 2260"):
        Placement(regions=[code])
    with pytest.raises(ValidationError, match="GB/T 2260"):
        Placement(regions_deny=[code])
    with pytest.raises(ValidationError, match="GB/T 2260"):
        Region(code=code)


@pytest.mark.parametrize("code", ["\uff13\uff11", "31\n"])
def test_region_codes_must_be_ascii_digits(code: str) -> None:
    with pytest.raises(ValidationError):
        Placement(regions=[code])
    with pytest.raises(ValidationError):
        Region(code=code)


def test_region_within() -> None:
    assert Region(code="310101").within("31")
    assert Region(code="310101").within("3101")
    assert not Region(code="310101").within("44")


@pytest.mark.parametrize(
    "placement",
    [
        {"priority": 1001},
        {"priority": -1001},
        {"policy": "quickest"},
        {"origin_region": "1"},
        {"datasets": ["x"] * 65},
        {"runtime_hint_s": 0},
        {"max_price_per_card_hour": "-1"},
        {"max_price_per_card_hour": "NaN"},
        {"max_price_per_card_hour": "1.1234567"},  # more than 6 decimal places
        {"max_price_per_card_hour": "10000000"},
    ],
)
def test_bad_placement_is_refused(placement: dict[str, Any]) -> None:
    errs = errors_of(spec(placement=placement))
    assert errs[0]["loc"][0] == "placement"


# ---- Resources.need(): TES GB are 10^9 bytes; pools count MiB --------------------------


@pytest.mark.parametrize(
    ("ram_gb", "mib"),
    [
        (1, 954),  # 10^9 / 2^20 = 953.67... rounds up
        (2, 1908),
        (0.5, 477),
        (1.048576, 1000),  # exactly 1000 MiB
        (1.073741824, 1024),  # exactly 1 GiB
        (85.89934592, 81920),  # exactly 80 GiB
        (1e-9, 1),  # never zero
        (65536, 62500000),
    ],
)
def test_need_converts_gb_to_mib_rounding_up(ram_gb: float, mib: int) -> None:
    assert Resources(ram_gb=ram_gb).need().memory_mib == mib


def test_need_is_exact_for_whole_mib() -> None:
    assert Resources(ram_gb=0.063963136).need().memory_mib == 61


def test_need_counts_cores_and_cards() -> None:
    assert Resources(cpu_cores=7).need() == Capacity(cpu_cores=7, memory_mib=954)
    with_cards = Resources(accelerator=AcceleratorRequest(count=8)).need()
    assert with_cards.accelerators == 8
    assert Resources().need().accelerators == 0


def test_terminal_states() -> None:
    assert (
        frozenset(
            {
                TaskState.COMPLETE,
                TaskState.EXECUTOR_ERROR,
                TaskState.SYSTEM_ERROR,
                TaskState.CANCELED,
                TaskState.PREEMPTED,
            }
        )
        == TERMINAL_STATES
    )
    for state in TaskState:
        assert state.terminal is (state in TERMINAL_STATES)
    for live in ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING"):
        assert not TaskState(live).terminal


def test_task_states_are_the_tes_states() -> None:
    assert {s.value for s in TaskState} == {
        "UNKNOWN",
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "PAUSED",
        "COMPLETE",
        "EXECUTOR_ERROR",
        "SYSTEM_ERROR",
        "CANCELED",
        "PREEMPTED",
        "CANCELING",
    }
