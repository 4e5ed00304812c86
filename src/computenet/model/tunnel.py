"""Frames of the gateway tunnel: HTTP requests and responses multiplexed over one WebSocket.

Every WebSocket message is one binary frame: a 5-byte header (stream id, big-endian uint32;
frame kind, one byte) and a payload. Stream 0 carries the gateway's reports; the node opens
streams with ids it counts up from 1 on each connection.

A stream: the node sends OPEN (JSON: task id, method, path, headers), BODY chunks and END;
the gateway answers HEAD (JSON: status, headers), BODY chunks and END, or RESET (JSON: reason)
at any point. Either side may RESET a stream (the node does when its client goes away).
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


class Kind(enum.IntEnum):
    """What a frame carries."""

    OPEN = 1
    BODY = 2
    END = 3
    HEAD = 4
    RESET = 5
    CREDIT = 6
    REPORT = 7


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
