"""Text frames written straight to a socket's transport.

A frame sent the ASGI way crosses a task switch (the connection's sender
task), Starlette's and uvicorn's send, websockets' frame object and
serializer, about two thirds of the gateway's CPU per frame at 6,000
frames/s. An event frame is the simplest frame there is (server to client:
unmasked, one fragment, text, no extension when permessage-deflate was
declined, the default), so the hub writes its bytes itself, synchronously,
whenever nothing else is queued for the socket and the transport takes
writes. Anything else (a paused transport, a closing socket, a compressed
connection, another ASGI server) goes the ASGI way.

It relies on uvicorn's websockets-sansio protocol: its ASGI `send` is a
bound method of the protocol object, which holds the transport, the
flow-control event and the websockets state machine. If that changes, the
writer is simply not used (`direct_writer` returns None); the tests check
that it is used with the uvicorn this project pins.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

# The default WebSocket implementation of uvicorn[standard] (a dependency).
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

#: Writes one text frame; False when it cannot now (the caller queues it).
FrameWriter = Callable[[str], bool]

_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (RFC 6455 section 5.2) for `payload`."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length) + payload
    if length < 1 << 16:
        return _MEDIUM.pack(_FIN_TEXT, 126, length) + payload
    return _LONG.pack(_FIN_TEXT, 127, length) + payload


def direct_writer(websocket: WebSocket) -> FrameWriter | None:
    """A writer for `websocket`'s accepted connection, or None when its frames
    must go the ASGI way."""
    protocol: Any = getattr(websocket._send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    if protocol.conn.extensions:
        return None  # permessage-deflate: websockets compresses each frame
    transport = protocol.transport
    writable = protocol.writable
    conn = protocol.conn

    def write(text: str) -> bool:
        if (
            not writable.is_set()  # paused: the peer reads slower than we write
            or protocol.close_sent
            or protocol.disconnected
            or conn.state is not State.OPEN
            or transport.is_closing()
        ):
            return False
        transport.write(text_frame(text.encode()))
        return True

    return write
