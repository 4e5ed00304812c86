"""A pool's egress allow-list: what an entry may say, and what a connection may reach."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from computenet.errors import InvalidInput
from computenet.model.egress import judge, parse_rule, parse_rules
from computenet.model.pool import PoolSpec


def test_entries_are_host_port_and_never_name_what_is_never_reached() -> None:
    pool = PoolSpec(
        label="p",
        cpu_cores=1,
        memory_mib=1,
        egress=["PyPI.org:443", "*.pythonhosted.org:443", "10.0.0.5:8080", "[2001:db8::5]:443"],
    )
    assert pool.egress == [
        "pypi.org:443",
        "*.pythonhosted.org:443",
        "10.0.0.5:8080",
        "[2001:db8::5]:443",
    ]
    for bad, why in [
        ("pypi.org", "expected HOST:PORT"),
        ("pypi.org:0", "expected HOST:PORT"),
        ("127.0.0.1:80", "loopback"),
        ("[::ffff:127.0.0.1]:80", "loopback"),
        ("[64:ff9b::7f00:1]:80", "loopback"),  # NAT64 of 127.0.0.1
        ("169.254.169.254:80", "link-local"),
        ("0.0.0.0:80", "unspecified"),
        ("2001:db8::5:443", "brackets"),
        ("a_b.example:443", "not a host name"),
        ("*.:443", "not a host name"),
    ]:
        with pytest.raises(InvalidInput, match=why):
            parse_rule(bad)
        with pytest.raises(ValidationError):
            PoolSpec(label="p", cpu_cores=1, memory_mib=1, egress=[bad])
    with pytest.raises(InvalidInput, match="at most 64"):
        parse_rules([f"h{i}.example:443" for i in range(65)])


def test_a_connection_is_judged_on_every_address_it_resolves_to() -> None:
    rules = parse_rules(["pypi.org:443", "*.example.org:443", "10.0.0.5:8080", "lan.corp:80"])
    node = ipaddress.ip_address("203.0.113.9")
    ok = ["151.101.0.223"]
    assert judge(rules, "pypi.org", 443, ok, {node}) is None
    assert judge(rules, "files.example.org", 443, ok, {node}) is None
    assert "not on this pool" in str(judge(rules, "example.org", 443, ok, {node}))
    assert "not on this pool" in str(judge(rules, "pypi.org", 80, ok, {node}))
    assert "not on this pool" in str(judge(rules, "evil.org", 443, ok, {node}))
    # Listed literally, a private address is reached; through a name, never (rebinding).
    assert judge(rules, "10.0.0.5", 8080, ["10.0.0.5"], {node}) is None
    assert "private" in str(judge(rules, "lan.corp", 80, ["10.0.0.7"], {node}))
    assert "private" in str(judge(rules, "pypi.org", 443, [*ok, "192.168.1.1"], {node}))
    assert "loopback" in str(judge(rules, "pypi.org", 443, ["127.0.0.1"], {node}))
    assert "loopback" in str(judge(rules, "pypi.org", 443, ["::ffff:127.0.0.1"], {node}))
    assert "link-local" in str(judge(rules, "pypi.org", 443, ["169.254.169.254"], {node}))
    assert "gateway or its node" in str(judge(rules, "pypi.org", 443, ["203.0.113.9"], {node}))
    assert "resolves to no address" in str(judge(rules, "pypi.org", 443, [], {node}))
