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
address is refused too; gateways check again when they fetch.
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


def _internal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not addr.is_global or addr.is_multicast


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
        if host in self.deny:
            raise InvalidInput(f"URL {url!r}: host {host} is denied by this node's URL policy")
        if host in self.allow:
            return
        for raw in resolve(host):
            addr = ipaddress.ip_address(raw.split("%")[0])
            if any(addr in net for net in self._deny_nets):
                raise InvalidInput(
                    f"URL {url!r}: address {addr} is denied by this node's URL policy"
                )
            if any(addr in net for net in self._allow_nets):
                continue
            if _internal(addr):
                raise InvalidInput(
                    f"URL {url!r} points at internal address {addr}; an operator may allow it "
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
