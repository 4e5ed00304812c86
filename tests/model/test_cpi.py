"""Compute power identifiers: parsing, formatting, allocation inside a prefix."""

from __future__ import annotations

import re

import pytest

from computenet.errors import InvalidInput
from computenet.model.cpi import (
    CPI,
    MAX_NODE_DEPTH,
    allocate_child_code,
    allocate_pool,
    allocate_provider,
    check_within_node,
    check_within_provider,
    node_code_within,
    validate_label,
    validate_node_code,
)


@pytest.mark.parametrize(
    "text",
    [
        "cn/acme/a100",
        "cn.31/acme-sh1/a100-80g",
        "cn.31.ai/p/q",
        "a.b.c.d.e.f.g.h/x/y",  # exactly MAX_NODE_DEPTH levels
        "cn/" + "a" * 63 + "/" + "b" * 63,
        "cn/0/9",
    ],
)
def test_parse_format_round_trip(text: str) -> None:
    cpi = CPI.parse(text)
    assert str(cpi) == text
    assert CPI.parse(str(cpi)) == cpi
    node, provider, pool = text.split("/")
    assert (cpi.node, cpi.provider, cpi.pool) == (node, provider, pool)
    assert cpi.provider_prefix == f"{node}/{provider}"


def test_parse_strips_surrounding_whitespace() -> None:
    assert str(CPI.parse("  cn.31/acme/gpu \n")) == "cn.31/acme/gpu"


def test_cpis_are_hashable_and_ordered() -> None:
    a, b = CPI.parse("cn/a/x"), CPI.parse("cn/b/x")
    assert a < b
    assert len({a, CPI.parse("cn/a/x"), b}) == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "non-empty"),
        ("cn", "three parts"),
        ("cn/acme", "got 2"),
        ("cn/acme/a/b", "got 4"),
        ("cn/acme/a100/", "got 4"),
        ("/cn/acme/a100", "got 4"),
        ("CN/acme/a100", "lowercase"),
        ("cn.SH/acme/a100", "lowercase"),
        ("cn/Acme/a100", "provider label 'Acme'"),
        ("cn/acme/A100", "pool label 'A100'"),
        ("cn//a100", "provider label ''"),
        ("cn/acme/", "pool label ''"),
        ("/acme/a100", "label ''"),
        ("cn..31/acme/a100", "label ''"),
        ("cn./acme/a100", "label ''"),
        (".cn/acme/a100", "label ''"),
        ("cn/ac_me/a100", "provider label 'ac_me'"),
        ("cn/acme/a100.80g", "pool label"),
        ("cn/ac me/a100", "provider label"),
        ("cn/acme/a100!", "pool label"),
        ("cn-31/acme/a100", "node code"),
        ("cn/-acme/a100", "not starting or ending with '-'"),
        ("cn/acme-/a100", "not starting or ending with '-'"),
        ("cn/acme/-a100", "not starting or ending with '-'"),
        ("cn/" + "a" * 64 + "/x", "1-63"),
        ("cn." + "1" * 17 + "/acme/x", "1-16"),
        ("a.b.c.d.e.f.g.h.i/acme/x", f"deeper than {MAX_NODE_DEPTH}"),
        ("cn/ácme/x", "provider label"),
    ],
)
def test_malformed_cpis_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as info:
        CPI.parse(text)
    assert needle in info.value.message
    assert info.value.status_code == 400


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(InvalidInput, match="non-empty string"):
        CPI.parse(None)  # type: ignore[arg-type]


def test_constructor_validates_like_parse() -> None:
    with pytest.raises(InvalidInput):
        CPI("cn", "Acme", "x")
    with pytest.raises(InvalidInput):
        CPI("CN", "acme", "x")


@pytest.mark.parametrize("text", ["cn\n/acme/pool", "cn/acme\n/pool", "cn.31\n/acme/pool"])
def test_labels_with_a_trailing_newline_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        CPI.parse(text)


def test_provider_label_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidInput):
        allocate_provider("cn", "acme\n")


def test_validate_helpers_return_their_input() -> None:
    assert validate_node_code("cn.31.ai") == "cn.31.ai"
    assert validate_label("acme-sh1") == "acme-sh1"
    with pytest.raises(InvalidInput, match="widget 'x_y'"):
        validate_label("x_y", "widget")


# ---- allocation ------------------------------------------------------------------------


def test_allocate_child_code_only_below_the_parent() -> None:
    assert allocate_child_code("cn", "31") == "cn.31"
    assert allocate_child_code("cn.31", "ai") == "cn.31.ai"
    assert node_code_within(allocate_child_code("cn.31", "ai"), "cn.31")


@pytest.mark.parametrize("label", ["", "AI", "31.44", "a-b", "a/b", "x" * 17, "../cn"])
def test_allocate_child_code_refuses_bad_labels(label: str) -> None:
    with pytest.raises(InvalidInput, match="child label"):
        allocate_child_code("cn", label)


def test_allocate_child_code_refuses_bad_parent_and_depth() -> None:
    with pytest.raises(InvalidInput):
        allocate_child_code("CN", "31")
    deepest = ".".join(["n"] * MAX_NODE_DEPTH)
    with pytest.raises(InvalidInput, match="deeper than"):
        allocate_child_code(deepest, "x")


def test_allocate_provider_only_on_the_node() -> None:
    assert allocate_provider("cn.31", "acme-sh1") == "cn.31/acme-sh1"
    for bad in ("", "Acme", "-acme", "ac/me", "cn.44/acme"):
        with pytest.raises(InvalidInput):
            allocate_provider("cn.31", bad)
    with pytest.raises(InvalidInput):
        allocate_provider("cn/31", "acme")


def test_allocate_pool_only_inside_the_provider_prefix() -> None:
    cpi = allocate_pool("cn.31/acme", "a100-80g")
    assert cpi == CPI("cn.31", "acme", "a100-80g")
    assert cpi.provider_prefix == "cn.31/acme"
    check_within_provider(cpi, "cn.31/acme")
    # A label cannot escape the prefix, and a prefix must be exactly node/provider.
    for label in ("../other", "x/y", "other/x", "", "A100"):
        with pytest.raises(InvalidInput):
            allocate_pool("cn.31/acme", label)
    for prefix in ("cn.31", "cn.31/acme/x", "", "/acme"):
        with pytest.raises(InvalidInput):
            allocate_pool(prefix, "a100")


def test_check_within_provider_refuses_other_providers() -> None:
    cpi = CPI.parse("cn.31/acme/a100")
    for prefix in ("cn.31/acme2", "cn.3/acme", "cn/acme", "cn.31.x/acme"):
        with pytest.raises(InvalidInput, match="outside provider prefix"):
            check_within_provider(cpi, prefix)


# ---- prefixes ----------------------------------------------------------------------------


def test_check_within_node() -> None:
    check_within_node(CPI.parse("cn.31/acme/a100"), "cn.31")
    check_within_node(CPI.parse("cn.31.ai/acme/a100"), "cn.31")
    check_within_node(CPI.parse("cn.31.ai/acme/a100"), "cn")
    for outside in ("cn.44/acme/a100", "cn.3/acme/a100", "cn.310/acme/a100", "cn/acme/a100"):
        with pytest.raises(InvalidInput, match=re.escape("outside this node's prefix 'cn.31'")):
            check_within_node(CPI.parse(outside), "cn.31")


@pytest.mark.parametrize(
    ("code", "prefix", "within"),
    [
        ("cn", "cn", True),
        ("cn.31", "cn", True),
        ("cn.31.ai", "cn", True),
        ("cn.31.ai", "cn.31", True),
        ("cn.31", "cn.31", True),
        ("cn.3", "cn.31", False),
        ("cn.31", "cn.3", False),
        ("cn.310", "cn.31", False),
        ("cn", "cn.31", False),
        ("cnx", "cn", False),
        ("us.31", "cn", False),
        ("cn.31", "cn.31.ai", False),
    ],
)
def test_node_code_within(code: str, prefix: str, within: bool) -> None:
    assert node_code_within(code, prefix) is within
