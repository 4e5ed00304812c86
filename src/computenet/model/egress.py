"""A pool's egress allow-list: the only network endpoints its sandboxed tasks may reach.

A task has no network by default. A pool may list ``HOST:PORT`` entries (``egress`` in its
declaration); its tasks then reach exactly those, through the gateway's egress proxy
(:mod:`computenet.gateway.egress_proxy`), which judges every connection here. Entry forms:

- ``pypi.org:443``: that host name, matched exactly (case-insensitive);
- ``*.pythonhosted.org:443``: any name below that domain (not the domain itself);
- ``10.0.0.5:8080``, ``[2001:db8::5]:443``: that address.

A name is resolved once per connection and connected to at the address judged. Whatever the
list says, an address that is loopback, link-local, unspecified, multicast or reserved is never
reached, nor one of the gateway's own host or its node; a private address (``10/8``...) only
when the entry names that very address, never through a host name (so a public name cannot be
pointed at the provider's network). An IPv6 address that embeds an IPv4 one is judged as that
IPv4 address (:func:`computenet.model.urlpolicy.judged_as`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from computenet.errors import InvalidInput
from computenet.model.urlpolicy import Address, judged_as

MAX_RULES = 64
# The port the egress proxy has inside every task's network namespace. Here, not in the
# proxy's module, so that the task runner need not import the proxy (and asyncio) to know it.
TASK_PROXY_PORT = 3128
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")


@dataclass(frozen=True)
class EgressRule:
    """One allowed endpoint: a host name (or ``*.domain``) or an address, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def address(self) -> Address | None:
        """The address this entry names, or None for a host name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def matches(self, host: str, port: int) -> bool:
        """True when a request for ``host:port`` falls under this entry."""
        if port != self.port:
            return False
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        if self.address is not None:
            try:
                return ipaddress.ip_address(host) == self.address
            except ValueError:
                return False
        return host == self.host


def never_reached(addr: Address) -> str | None:
    """Why ``addr`` is never reached whatever a pool lists (loopback...), or None."""
    for a in judged_as(addr):
        for why, bad in (
            ("loopback", a.is_loopback),
            ("unspecified", a.is_unspecified),
            ("link-local", a.is_link_local),
            ("multicast", a.is_multicast),
            ("reserved", a.is_reserved),
        ):
            if bad:
                return f"{addr} is a {why} address"
    if isinstance(addr, ipaddress.IPv6Address) and addr in ipaddress.ip_network("64:ff9b:1::/48"):
        return f"{addr} is in the local-use NAT64 prefix"
    return None


def parse_rule(text: str) -> EgressRule:
    """``HOST:PORT`` as an :class:`EgressRule`; raise ``InvalidInput`` saying what is wrong."""
    entry = text.strip().lower()
    host, sep, port_text = entry.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidInput(f"egress entry {text!r}: expected HOST:PORT, e.g. pypi.org:443")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(f"egress entry {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise InvalidInput(f"egress entry {text!r}: write an IPv6 address in brackets, [::1]:443")
    rule = EgressRule(host.rstrip("."), int(port_text))
    addr = rule.address
    if addr is not None:
        why = never_reached(addr)
        if why:
            raise InvalidInput(f"egress entry {text!r}: {why}, which tasks never reach")
        return EgressRule(str(addr), rule.port)
    if len(rule.host) > 253 or not _NAME.match(rule.host):
        raise InvalidInput(f"egress entry {text!r}: {host!r} is not a host name or address")
    return rule


def parse_rules(entries: Iterable[str]) -> list[EgressRule]:
    """Every entry parsed (duplicates dropped, order kept)."""
    rules: list[EgressRule] = []
    for entry in entries:
        rule = parse_rule(entry)
        if rule not in rules:
            rules.append(rule)
    if len(rules) > MAX_RULES:
        raise InvalidInput(f"an egress allow-list holds at most {MAX_RULES} entries")
    return rules


def judge(
    rules: list[EgressRule],
    host: str,
    port: int,
    found: list[str],
    forbidden: set[Address],
) -> str | None:
    """Why a connection to ``host:port``, which resolved to ``found``, is refused, or None
    when every address may be reached. ``forbidden``: the gateway's host's and its node's
    addresses."""
    rule = next((r for r in rules if r.matches(host, port)), None)
    if rule is None:
        return f"{host}:{port} is not on this pool's egress allow-list"
    if not found:
        return f"{host} resolves to no address"
    for raw in found:
        addr = ipaddress.ip_address(raw.split("%")[0])
        why = never_reached(addr)
        if why:
            return why
        if any(a in forbidden for a in (addr, *judged_as(addr))):
            return f"{addr} is an address of this gateway or its node"
        if any(not a.is_global for a in judged_as(addr)) and rule.address != addr:
            return (
                f"{addr} is a private address: reached only when the pool lists it "
                f"({addr}:{port}), never through a host name"
            )
    return None
