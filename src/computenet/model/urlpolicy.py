"""Which data URLs a task may name: no reaching into the networks behind a node or gateway.

A task's inputs and outputs are fetched by a gateway inside a provider's network, so a URL
aimed at an internal address (``http://169.254.169.254/`` cloud metadata, ``http://10.0.0.5``,
a database on loopback) or at the gateway's own files (``file:///etc/shadow``) would let a
consumer read what it must not. By default every address that is not public is refused, and
so is ``file://``; operators open what they mean to share with ``allow`` entries:

- a network: ``10.20.0.0/16``, ``127.0.0.1/32``
- a host name, matched exactly: ``minio.lab.example``
- a file tree: ``file:///shared/datasets/``

``deny`` entries (networks or host names) are refused even when public. Host names are
resolved (every address they resolve to must pass), so a public name pointing at an internal
address is refused too; gateways check again when they fetch, at every redirect, on the
address they connect to (:mod:`computenet.gateway.safehttp`).

An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32``) reaches that
IPv4 host through a translator, so it is judged as that IPv4 address: ``64:ff9b::127.0.0.1``
is loopback. The local-use NAT64 prefix ``64:ff9b:1::/48`` may embed the IPv4 address at
several offsets (RFC 6052), so it is always internal.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from computenet.errors import InvalidInput

Resolver = Callable[[str], list[str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Schemes staged by fsspec whose host part names a network endpoint.
NETWORK_SCHEMES = frozenset({"http", "https", "s3", "gs", "ftp", "sftp"})
SCHEMES = NETWORK_SCHEMES | {"file"}


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(f"cannot resolve host {host!r}") from None
    return sorted({str(info[4][0]) for info in infos})


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(addr: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (none for a plain IPv6 address).

    Teredo gives two: its server and its (obfuscated) client; both must pass.
    """
    if isinstance(addr, ipaddress.IPv4Address):
        return []
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr in _V4_COMPATIBLE or addr in _NAT64:
        return [low32]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    return []


def judged_as(addr: Address) -> list[Address]:
    """The addresses the policy judges for ``addr``: the IPv4 addresses it embeds, else
    itself."""
    return list(embedded_ipv4(addr)) or [addr]


def _internal(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr in _NAT64_LOCAL:
        return True
    return any(not a.is_global or a.is_multicast for a in judged_as(addr))


@dataclass(frozen=True)
class UrlPolicy:
    """Allow and deny entries; see the module's docstring for their forms."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow_nets: tuple[Network, ...] = field(init=False, repr=False)
    _deny_nets: tuple[Network, ...] = field(init=False, repr=False)
    _allow_files: tuple[PurePosixPath, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow_nets", _networks(self.allow))
        object.__setattr__(self, "_deny_nets", _networks(self.deny))
        files = tuple(
            PurePosixPath(unquote(urlsplit(e).path)) for e in self.allow if e.startswith("file:")
        )
        object.__setattr__(self, "_allow_files", files)

    def check(self, url: str, resolve: Resolver = resolve_host) -> None:
        """Raise ``InvalidInput`` with the reason if a task may not name ``url``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidInput(f"URL scheme {scheme or '(none)'!r} is not supported: {url!r}")
        if scheme == "file":
            self._check_file(url, PurePosixPath(unquote(parts.path)))
            return
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidInput(f"URL {url!r} names no host")
        if scheme == "s3" and "." not in host and ":" not in host:
            return  # s3://bucket/key: the bucket is not an address; the endpoint is configured
        self.addresses(host, resolve, what=f"URL {url!r}")

    def addresses(self, host: str, resolve: Resolver = resolve_host, what: str = "") -> list[str]:
        """The addresses ``host`` resolves to, once, all checked: connect to these and only
        these, so a second DNS answer cannot differ from the one judged."""
        what = what or f"host {host}"
        host = host.lower().strip("[]")
        if host in self.deny:
            raise InvalidInput(f"{what}: host {host} is denied by this node's URL policy")
        found = resolve(host)
        if host in self.allow:
            return found
        for raw in found:
            self._check_address(ipaddress.ip_address(raw.split("%")[0]), what)
        return found

    def _check_address(self, addr: Address, what: str) -> None:
        judged = [addr, *embedded_ipv4(addr)]
        if any(a in net for a in judged for net in self._deny_nets):
            raise InvalidInput(f"{what}: address {addr} is denied by this node's URL policy")
        if any(a in net for a in judged for net in self._allow_nets):
            return
        if _internal(addr):
            raise InvalidInput(
                f"{what} points at internal address {addr}; an operator may allow it "
                "with the node's --url-allow option"
            )

    def _check_file(self, url: str, path: PurePosixPath) -> None:
        if ".." in path.parts or not path.is_absolute():
            raise InvalidInput(f"file URL {url!r} must be an absolute path without '..'")
        if not any(path == root or root in path.parents for root in self._allow_files):
            raise InvalidInput(
                f"file URL {url!r} is outside the shared file trees this node allows "
                "(--url-allow file:///path/)"
            )

    def to_json(self) -> dict[str, list[str]]:
        """The entries, for a job file (``UrlPolicy(**{k: tuple(v)})`` reads them back)."""
        return {"allow": list(self.allow), "deny": list(self.deny)}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> UrlPolicy:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(data.get("allow", ())), tuple(data.get("deny", ())))

    def check_all(self, urls: Iterable[str], resolve: Resolver = resolve_host) -> None:
        """Check every URL; the first refused one raises."""
        for url in urls:
            self.check(url, resolve)


def _networks(entries: Iterable[str]) -> tuple[Network, ...]:
    nets = []
    for entry in entries:
        if entry.startswith("file:"):
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if not entry or "/" in entry:
                raise InvalidInput(f"URL policy entry {entry!r} is not a network or host") from None
    return tuple(nets)
