"""Class 7 (URL checks walked around), at the gateway's fetch: a redirect from an allowed
server to a refused internal address is refused at that hop, and names are resolved once,
through the policy, to the addresses connected to. Real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from computenet.errors import InvalidInput
from computenet.gateway.safehttp import PolicyResolver, Refused, http_filesystem, refusal
from computenet.gateway.staging import StagingError, stage_input
from computenet.model.urlpolicy import UrlPolicy

SECRET = b"the-internal-secret\n"


@contextmanager
def _server(
    address: str, answer: tuple[int, dict[str, str], bytes], port: int = 0
) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on ``address`` answering every GET/HEAD with ``answer``; yields its base
    URL and the paths it was asked for."""
    asked: list[str] = []
    status, headers, body = answer

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, with_body: bool) -> None:
            asked.append(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(True)

        def do_HEAD(self) -> None:
            self._reply(False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_an_internal_address_is_refused_at_that_hop(tmp_path: Path) -> None:
    # 127.0.0.2 stands for an allowed data server; 127.0.0.1 for the provider's internal one.
    policy = UrlPolicy(allow=("127.0.0.2/32",))
    with (
        _server("127.0.0.1", (200, {}, SECRET)) as (inside, inside_asked),
        _server("127.0.0.2", (302, {"Location": f"{inside}/secret"}, b"")) as (data, _),
    ):
        with pytest.raises(StagingError, match=r"refused by this gateway.*127\.0\.0\.1"):
            stage_input({"url": f"{data}/file.txt"}, tmp_path / "in.txt", policy)
        assert inside_asked == []  # the internal server was never even asked
        assert not (tmp_path / "in.txt").exists()
        # The same redirect to an address the policy opens is followed.
        opened = UrlPolicy(allow=("127.0.0.0/8",))
        stage_input({"url": f"{data}/file.txt"}, tmp_path / "in.txt", opened)
        assert (tmp_path / "in.txt").read_bytes() == SECRET


def test_a_redirect_to_an_embedded_ipv4_form_is_refused(tmp_path: Path) -> None:
    policy = UrlPolicy(allow=("127.0.0.2/32",))
    redirect = (301, {"Location": "http://[64:ff9b::7f00:1]/x"}, b"")
    with (
        _server("127.0.0.2", redirect) as (data, _),
        pytest.raises(StagingError, match="internal address 64:ff9b::7f00:1"),
    ):
        stage_input({"url": f"{data}/f"}, tmp_path / "in.txt", policy)


def test_names_are_resolved_through_the_policy_and_pinned() -> None:
    # "localhost" resolves to loopback: refused by default, whatever the first check said.
    with pytest.raises(Refused, match="internal address"):
        asyncio.run(PolicyResolver(UrlPolicy()).resolve("localhost", 80))
    got = asyncio.run(
        PolicyResolver(UrlPolicy(allow=("127.0.0.0/8", "::1/128"))).resolve("localhost", 80)
    )
    assert got and all(r["host"] in ("127.0.0.1", "::1") and r["port"] == 80 for r in got)
    # Each answer is one the policy judged: a resolver that changes its mind (DNS
    # rebinding) is asked once per connection, and its second answer is judged too.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    policy = UrlPolicy()
    assert policy.addresses("rebind.example", lambda _h: next(answers)) == ["93.184.216.34"]
    with pytest.raises(InvalidInput, match=r"internal address 127\.0\.0\.1"):
        policy.addresses("rebind.example", lambda _h: next(answers))


def test_dns_rebinding_cannot_steer_the_connection_inside() -> None:
    """A name that answers an opened address when checked and an internal one when
    connected to: the fetch checks the very answer it connects with, so it never reaches the
    internal server listening on the same port."""
    with _server("127.0.0.2", (200, {}, b"public data\n")) as (public, _):
        port = int(public.rsplit(":", 1)[1])
        with _server("127.0.0.1", (200, {}, SECRET), port) as (_inside, inside_asked):
            calls: list[str] = []

            def rebinding(host: str) -> list[str]:
                calls.append(host)
                return ["127.0.0.2" if len(calls) % 2 else "127.0.0.1"]  # checked, rebound

            fs = http_filesystem(UrlPolicy(allow=("127.0.0.2/32",)), rebinding)
            with pytest.raises(Exception) as caught:
                fs.cat_file(f"http://rebind.test:{port}/x")
            assert refusal(caught.value) is not None, caught.value
            assert "127.0.0.1" in str(refusal(caught.value))
            assert inside_asked == []  # never connected to
            assert len(calls) >= 2  # the name was looked up again for the connection
