"""A four-node federation on loopback for tests: national, Shanghai, Guizhou, industry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from computenet.federation.keys import CertBody, Identity, public_b64, sign_cert
from nodeproc import Proc, admin_token, free_port, start_gateway, start_node

TIMEOUT_S = "3"  # a silent child's pools turn unavailable after this (short for tests)


@dataclass
class Member:
    """One node of the test federation with its gateway."""

    name: str
    code: str
    url: str
    port: int
    data_dir: Path
    token: str
    proc: Proc
    gateway: Proc | None = None
    node_args: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", headers=self.headers, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None) -> Any:
        r = httpx.post(f"{self.url}{path}", json=body, headers=self.headers, timeout=10)
        r.raise_for_status()
        return r.json()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached in {timeout_s} s (last: {last!r})")


def child_token(parent: Member, label: str, level: str) -> str:
    out = parent.post("/federation/v1/tokens", {"label": label, "level": level})
    return str(out["enrol_token"])


def start_member(
    base: Path,
    name: str,
    parent: Member | None,
    label: str,
    level: str,
    region: str,
    *extra: str,
    price_per_core_hour: str = "0",
    cores: int = 2,
    fed_timeout_s: str = TIMEOUT_S,
) -> Member:
    """Start a node in ``region`` (enrolled under ``parent``) and a local gateway with
    ``cores`` cores there; ``extra`` goes to the node's command line."""
    port = free_port()
    data = base / name
    args = ["--fed-timeout-s", fed_timeout_s, "--region", region, *extra]
    if parent is not None:
        tok = child_token(parent, label, level)
        args += ["--level", level, "--parent", parent.url, "--enrol-token", tok]
    proc = start_node(data, port, *args)
    url = f"http://127.0.0.1:{port}"
    token = admin_token(proc)
    code = httpx.get(f"{url}/federation/v1/node", timeout=5).json()["code"]
    m = Member(name, code, url, port, data, token, proc, node_args=args)
    m.gateway = start_gateway(
        url,
        token,
        base / f"{name}-gw",
        name,
        cores,
        "--region",
        region,
        "--price-per-core-hour",
        price_per_core_hour,
    )
    return m


def stop_all(members: dict[str, Member]) -> None:
    """Stop every member's gateway and node."""
    for m in members.values():
        if m.gateway is not None:
            m.gateway.stop()
        m.proc.stop()


def restart(m: Member) -> None:
    """Start a member's node again on the same port and data (it keeps its identity)."""
    m.proc = start_node(m.data_dir, m.port, *m.node_args)


NOW = "2026-11-21T00:00:00+00:00"


def child_of(parent: Identity, code: str) -> Identity:
    """A child identity certified by ``parent`` (for unit tests of trust)."""
    key = Ed25519PrivateKey.generate()
    body = CertBody(
        code=code,
        level="regional",
        url=f"http://{code}",
        public_key=public_b64(key),
        issuer=parent.code,
        issued_at=NOW,
    )
    return Identity(key, [*parent.chain, sign_cert(parent.key, body)], parent.url)
