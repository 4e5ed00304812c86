"""HTTP(S) input fetches that cannot be steered inside: every hop checked, every address pinned.

The node checks a task's URLs at submit, but what a gateway connects to is decided later,
from its own network: a redirect can point from an allowed URL to ``http://127.0.0.1/``, and
a name can resolve to a public address when checked and to an internal one when fetched (DNS
rebinding). So the fsspec HTTP file system a gateway stages with runs on an aiohttp session
that

- checks the URL of every request, the first and each redirect, against the URL policy (a
  client middleware: aiohttp runs middlewares once per hop), and
- resolves each host name once, through the policy (:meth:`UrlPolicy.addresses`), and
  connects only to the addresses it judged (a custom resolver): no second DNS answer is ever
  used.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from fsspec.implementations.http import HTTPFileSystem

from computenet.errors import ComputeNetError
from computenet.model.urlpolicy import Resolver, UrlPolicy, resolve_host

# Redirect chains longer than this are refused (aiohttp's own default is 10).
MAX_REDIRECTS = 5


class Refused(Exception):
    """A hop of an HTTP fetch aimed where the gateway's URL policy does not allow."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by this gateway: {reason}")


def refusal(exc: BaseException) -> Refused | None:
    """The :class:`Refused` behind ``exc``, if any: fsspec turns a failed fetch into its own
    error (often ``FileNotFoundError``), keeping ours as the cause."""
    seen: BaseException | None = exc
    for _ in range(16):  # a cause chain is short; never loop on a cycle
        if seen is None or isinstance(seen, Refused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class PolicyResolver(AbstractResolver):
    """Resolves a host once and returns only the addresses the policy accepts (all of them,
    or the request fails): aiohttp then connects to exactly those."""

    def __init__(self, policy: UrlPolicy, resolve: Resolver = resolve_host) -> None:
        self.policy = policy
        self.lookup = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Addresses of ``host`` the policy allows; raise :class:`Refused` otherwise."""
        try:
            found = await asyncio.to_thread(self.policy.addresses, host, self.lookup)
        except ComputeNetError as exc:
            raise Refused(exc.message) from None
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in found
        ]

    async def close(self) -> None:
        """Nothing to release."""


def _hop_check(policy: UrlPolicy, resolve: Resolver) -> Any:
    async def check(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        # A literal address never reaches the resolver, so each hop's URL is judged here.
        try:
            await asyncio.to_thread(policy.check, str(req.url), resolve)
        except ComputeNetError as exc:
            raise Refused(exc.message) from None
        return await handler(req)

    return check


def http_filesystem(policy: UrlPolicy, resolve: Resolver = resolve_host) -> HTTPFileSystem:
    """An fsspec HTTP file system whose every connection obeys ``policy``; ``resolve`` is the
    name lookup (the system's; tests give one that changes its answers)."""

    async def get_client(**kwargs: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(policy, resolve), use_dns_cache=False
        )
        return aiohttp.ClientSession(
            connector=connector,
            middlewares=(_hop_check(policy, resolve),),
            trust_env=False,  # a proxy would connect on our behalf, past these checks
            **kwargs,
        )

    # Keyword arguments fsspec does not know go to every request it makes.
    return HTTPFileSystem(
        get_client=get_client, skip_instance_cache=True, max_redirects=MAX_REDIRECTS
    )
