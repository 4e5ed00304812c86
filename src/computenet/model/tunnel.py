"""Frames of the gateway tunnel: HTTP requests and responses multiplexed over one WebSocket.

Every WebSocket message is one binary frame: a 5-byte header (stream id, big-endian uint32;
frame kind, one byte) and a payload. Stream 0 carries the gateway's reports; the node opens
streams with ids it counts up from 1 on each connection.

A stream: the node sends OPEN (JSON: task id, method, path, headers), BODY chunks and END;
the gateway answers HEAD (JSON: status, headers), BODY chunks and END, or RESET (JSON: reason)
at any point. A small request (and its answer) fits in one frame when both ends speak tunnel
version 2 (the gateway says so in the ``X-ComputeNet-Tunnel`` header when it connects): REQUEST
is OPEN, its whole body and END; the gateway answers a REQUEST whose response has a
Content-Length of at most ``CHUNK_BYTES`` with RESPONSE (HEAD, the whole body and END), and any
other one (a stream, server-sent events) as before. Either side may RESET a stream (the node
does when its client goes away).
Response bodies are flow-controlled: the gateway sends at most ``WINDOW_BYTES`` a stream ahead
of the CREDIT frames the node returns as its client takes the bytes, so one slow client holds
back only its own stream.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

PATH = "/gateway/v1/tunnel"
HEADER = struct.Struct("!IB")
CHUNK_BYTES = 64 * 1024  # body bytes per frame
MAX_FRAME_BYTES = CHUNK_BYTES + 64 * 1024  # a frame with headers; the WebSocket's max_size
WINDOW_BYTES = 512 * 1024  # response bytes in flight per stream before the node credits them
MAX_STREAMS = 512  # open streams per tunnel
REPORT_STREAM = 0
VERSION = 2  # 2: REQUEST and RESPONSE frames
VERSION_HEADER = "x-computenet-tunnel"
_JSON_LEN = struct.Struct("!I")


class Kind(enum.IntEnum):
    """What a frame carries."""

    OPEN = 1
    BODY = 2
    END = 3
    HEAD = 4
    RESET = 5
    CREDIT = 6
    REPORT = 7
    REQUEST = 8  # OPEN + whole body + END (version 2)
    RESPONSE = 9  # HEAD + whole body + END (version 2)


class FrameError(ValueError):
    """A frame that does not parse: the connection is closed."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    stream: int
    kind: Kind
    payload: bytes

    def json(self) -> dict[str, Any]:
        """The payload of a JSON frame (OPEN, HEAD, RESET, REPORT)."""
        try:
            data = json.loads(self.payload)
        except ValueError as exc:
            raise FrameError(f"frame {self.kind.name} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise FrameError(f"frame {self.kind.name} is not a JSON object")
        return data

    def whole(self) -> tuple[dict[str, Any], bytes]:
        """The JSON part and the body of a REQUEST or RESPONSE frame."""
        if len(self.payload) < _JSON_LEN.size:
            raise FrameError(f"frame {self.kind.name} is too short")
        (n,) = _JSON_LEN.unpack_from(self.payload)
        end = _JSON_LEN.size + n
        if end > len(self.payload):
            raise FrameError(f"frame {self.kind.name} is shorter than its JSON part")
        head = Frame(self.stream, self.kind, self.payload[_JSON_LEN.size : end]).json()
        return head, self.payload[end:]

    def credit(self) -> int:
        """The byte count of a CREDIT frame."""
        if len(self.payload) != 4:
            raise FrameError("a CREDIT frame carries 4 bytes")
        return int.from_bytes(self.payload, "big")


def encode(stream: int, kind: Kind, payload: bytes = b"") -> bytes:
    """One frame as WebSocket message bytes."""
    return HEADER.pack(stream, kind) + payload


def encode_json(stream: int, kind: Kind, data: dict[str, Any]) -> bytes:
    """A frame whose payload is ``data`` as JSON."""
    return encode(stream, kind, json.dumps(data, separators=(",", ":")).encode())


def encode_whole(stream: int, kind: Kind, data: dict[str, Any], body: bytes) -> bytes:
    """A REQUEST or RESPONSE frame: ``data`` as JSON (length first), then the whole body."""
    js = json.dumps(data, separators=(",", ":")).encode()
    return b"".join((HEADER.pack(stream, kind), _JSON_LEN.pack(len(js)), js, body))


def encode_credit(stream: int, nbytes: int) -> bytes:
    """A CREDIT frame returning ``nbytes`` of a stream's window."""
    return encode(stream, Kind.CREDIT, nbytes.to_bytes(4, "big"))


def decode(message: bytes | str) -> Frame:
    """Parse one WebSocket message; raise FrameError when it is not a frame."""
    if isinstance(message, str) or len(message) < HEADER.size:
        raise FrameError("tunnel frames are binary and at least 5 bytes")
    stream, kind = HEADER.unpack_from(message)
    try:
        k = Kind(kind)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None
    return Frame(stream, k, bytes(message[HEADER.size :]))


# Hop-by-hop headers (RFC 9110 section 7.6.1) are not passed through a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def pass_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """The end-to-end headers of a message, lower-cased names, hop-by-hop ones dropped."""
    return [[k.lower(), v] for k, v in headers if k.lower() not in HOP_BY_HOP]
