"""The egress proxy's refusals, on a real unix socket (the allowed path, through a real
sandbox and bridge, is tests/security/test_egress.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from computenet.gateway.egress_proxy import EgressProxy
from computenet.model.egress import parse_rules


async def _ask(sock: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_refusals_answer_403_with_the_reason_and_are_logged(tmp_path: Path) -> None:
    looked_up: list[str] = []

    def lookup(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return {"lan.corp": ["10.0.0.7"], "rebind.example": ["1.1.1.1", "127.0.0.1"]}[host]

    rules = parse_rules(["lan.corp:80", "rebind.example:443"])
    proxy = EgressProxy(rules, set(), tmp_path / "egress.log", lookup)
    sock = tmp_path / "p.sock"

    async def scenario() -> list[bytes]:
        server = await asyncio.start_unix_server(proxy.handle, str(sock))
        async with server:
            return [
                await _ask(sock, b"CONNECT lan.corp:80 HTTP/1.1\r\n\r\n"),
                await _ask(sock, b"CONNECT rebind.example:443 HTTP/1.1\r\n\r\n"),
                await _ask(sock, b"CONNECT other.example:443 HTTP/1.1\r\n\r\n"),
                await _ask(sock, b"GET https://lan.corp/ HTTP/1.1\r\n\r\n"),
                await _ask(sock, b"GET http://lan.corp:81/x HTTP/1.1\r\nHost: lan.corp\r\n\r\n"),
                await _ask(sock, b"hello\r\n\r\n"),
            ]

    answers = asyncio.run(scenario())
    assert all(a.startswith(b"HTTP/1.1 403 Forbidden\r\n") for a in answers), answers
    reasons = [a.split(b"\r\n\r\n", 1)[1].decode() for a in answers]
    assert "10.0.0.7 is a private address" in reasons[0]
    assert "127.0.0.1 is a loopback address" in reasons[1]
    assert "other.example:443 is not on this pool's egress allow-list" in reasons[2]
    assert "only CONNECT, or http:// in absolute form" in reasons[3]
    assert "lan.corp:81 is not on this pool's egress allow-list" in reasons[4]
    assert "not an HTTP/1 proxy request" in reasons[5]
    assert looked_up == ["lan.corp", "rebind.example"]  # a name off the list is never resolved
    log = (tmp_path / "egress.log").read_text().splitlines()
    assert len(log) == 6 and all(" refused: " in line for line in log), log
