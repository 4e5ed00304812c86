"""Calling another node: seal a request, check the signed reply."""

from __future__ import annotations

import time
from typing import Any

import httpx

from computenet.errors import Unavailable, error_for_status, error_from_answer
from computenet.federation.envelope import Envelope, open_envelope, seal
from computenet.federation.keys import BadSignature, CertBody, Identity


class Peer:
    """Signed request/reply with other nodes of the federation."""

    def __init__(self, ident: Identity, timeout_s: float = 5.0) -> None:
        self.ident = ident
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def ping(self, url: str) -> tuple[float, str]:
        """Time one round trip to the node at ``url`` (its public ``/federation/v1/ping``);
        return the milliseconds and the region it says it is in."""
        began = time.perf_counter()
        try:
            resp = self._http.get(f"{url.rstrip('/')}/federation/v1/ping")
        except httpx.HTTPError as exc:
            raise Unavailable(f"node at {url} does not answer: {exc}") from None
        rtt_ms = (time.perf_counter() - began) * 1000
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code)(f"{url}: ping answered {resp.status_code}")
        return rtt_ms, str(resp.json().get("region", ""))

    def call(
        self, url: str, kind: str, body: dict[str, Any], *, to: str
    ) -> tuple[CertBody, dict[str, Any]]:
        """Send ``body`` as a ``kind`` message to node ``to`` at ``url``; return the replier's
        certificate and the reply body. Errors come back as the matching ComputeNet error."""
        env = seal(self.ident, kind, body, to)
        try:
            resp = self._http.post(
                f"{url.rstrip('/')}/federation/v1/msg/{kind}", json=env.model_dump(mode="json")
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"node at {url} does not answer: {exc}") from None
        if resp.status_code >= 400:
            raise error_from_answer(resp.status_code, resp.text, f"{url}: ")
        reply = Envelope.model_validate(resp.json())
        me = self.ident.code
        sender = open_envelope(reply, self.ident.root_key, None, me, kind=f"{kind}.reply")
        if reply.body.get("in_reply_to") != env.nonce:
            raise BadSignature(f"reply from {url} does not answer our request")
        if sender.code != to:
            raise BadSignature(f"{url} answered as node {sender.code}, not {to}")
        return sender, reply.body
