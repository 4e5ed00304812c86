"""The data URL policy: internal addresses and local files are refused unless allowed."""

from __future__ import annotations

import pytest

from computenet.errors import InvalidInput
from computenet.model.urlpolicy import UrlPolicy

DNS = {
    "data.example.org": ["93.184.216.34"],
    "sneaky.example.org": ["93.184.216.35", "10.1.2.3"],  # one public, one internal answer
    "minio.lab": ["10.20.0.7"],
}


def fake_resolve(host: str) -> list[str]:
    return DNS.get(host, [host])  # a literal address resolves to itself


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "internal address 169.254.169.254"),
        ("http://127.0.0.1:5432/", "internal address 127.0.0.1"),
        ("https://10.0.0.5/x", "internal address 10.0.0.5"),
        ("http://[::1]/x", "internal address ::1"),
        ("http://[::ffff:127.0.0.1]/x", "internal address"),
        ("http://0.0.0.0/x", "internal address 0.0.0.0"),
        ("http://100.64.0.1/x", "internal address 100.64.0.1"),
        ("https://sneaky.example.org/x", "internal address 10.1.2.3"),
        ("file:///etc/shadow", "outside the shared file trees"),
        ("file:///data/../etc/passwd", "without '..'"),
        ("gopher://example.org/", "scheme 'gopher' is not supported"),
        ("/just/a/path", "scheme '(none)'"),
        ("http:///nohost", "names no host"),
    ],
)
def test_default_policy_refuses(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why.replace("(", r"\(").replace(")", r"\)")):
        UrlPolicy().check(url, fake_resolve)


@pytest.mark.parametrize(
    "url",
    ["https://data.example.org/a.csv", "http://93.184.216.34/x", "s3://bucket/key", "s3://b/k/"],
)
def test_default_policy_allows_public_data(url: str) -> None:
    UrlPolicy().check(url, fake_resolve)


def test_operators_open_networks_hosts_and_file_trees() -> None:
    policy = UrlPolicy(allow=("10.20.0.0/16", "127.0.0.1/32", "file:///shared/data/"))
    for url in [
        "http://minio.lab:9000/bucket/x",
        "http://127.0.0.1:8080/x",
        "file:///shared/data/genome.fa",
        "file:///shared/data",
    ]:
        policy.check(url, fake_resolve)
    for url in ["http://127.0.0.2/x", "file:///shared/database", "http://10.21.0.1/"]:
        with pytest.raises(InvalidInput):
            policy.check(url, fake_resolve)
    assert UrlPolicy(allow=("minio.lab",)).check("http://minio.lab/x", fake_resolve) is None


def test_deny_entries_win_even_for_public_addresses() -> None:
    policy = UrlPolicy(deny=("93.184.216.0/24", "data.example.org"))
    with pytest.raises(InvalidInput, match="denied"):
        policy.check("http://93.184.216.34/x", fake_resolve)
    with pytest.raises(InvalidInput, match="denied"):
        policy.check("https://DATA.example.org/x", fake_resolve)


def test_a_bad_policy_entry_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a network or host"):
        UrlPolicy(allow=("10.0.0.0/99",))


@pytest.mark.parametrize(
    ("host", "v4"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.169.254"),  # IPv4-compatible, cloud metadata
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b::a00:5", "10.0.0.5"),
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo, client 127.0.0.1
    ],
)
def test_ipv6_forms_that_embed_an_internal_ipv4_address_are_refused(host: str, v4: str) -> None:
    import ipaddress

    from computenet.model.urlpolicy import embedded_ipv4

    assert ipaddress.IPv4Address(v4) in embedded_ipv4(ipaddress.ip_address(host))
    with pytest.raises(InvalidInput, match="internal address"):
        UrlPolicy().check(f"http://[{host}]/x", fake_resolve)


def test_embedded_ipv4_is_judged_as_that_address() -> None:
    # A public IPv4 address behind NAT64 or 6to4 is public; an allowed network is allowed in
    # every form; the local-use NAT64 prefix is always internal.
    UrlPolicy().check("http://[64:ff9b::5db8:d822]/x", fake_resolve)  # 93.184.216.34
    UrlPolicy().check("http://[2002:5db8:d822::1]/x", fake_resolve)
    UrlPolicy(allow=("10.20.0.0/16",)).check("http://[64:ff9b::a14:7]/x", fake_resolve)
    with pytest.raises(InvalidInput, match="denied"):
        UrlPolicy(deny=("93.184.0.0/16",)).check("http://[::ffff:93.184.216.34]/", fake_resolve)
    with pytest.raises(InvalidInput, match="internal address"):
        UrlPolicy().check("http://[64:ff9b:1::5db8:d822]/x", fake_resolve)


def test_addresses_are_resolved_once_and_all_checked() -> None:
    calls: list[str] = []

    def counting(host: str) -> list[str]:
        calls.append(host)
        return fake_resolve(host)

    assert UrlPolicy().addresses("data.example.org", counting) == ["93.184.216.34"]
    assert calls == ["data.example.org"]
    with pytest.raises(InvalidInput, match=r"10\.1\.2\.3"):
        UrlPolicy().addresses("sneaky.example.org", counting)
