"""Frames written straight to the transport: the same bytes websockets would
send, used under this project's uvicorn, and never with compression."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode

from gateway.direct_frames import direct_writer, text_frame
from tests.harness import serve


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_a_frame_is_what_websockets_would_serialize(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, payload, fin=True).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


class _App:
    """Writes `count` frames directly, then one the ASGI way, then closes."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.direct: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        write = direct_writer(websocket)
        self.direct.append(write is not None)
        for i in range(self.count):
            text = f"direct {i} " + "x" * (i * 37 % 300)
            if write is None or not write(text):
                await websocket.send_text(text)
        await websocket.send_text("asgi")
        await websocket.close()


async def _receive_all(url: str, **options: object) -> list[str]:
    got: list[str] = []
    async with websockets.connect(url, **options) as ws:  # type: ignore[arg-type]
        async for message in ws:
            assert isinstance(message, str)
            got.append(message)
    return got


async def test_frames_are_written_directly_under_uvicorn_and_arrive_in_order() -> None:
    app = _App(500)
    async with serve(app) as address:
        got = await asyncio.wait_for(_receive_all(f"ws://{address}/", compression=None), 30)
    assert app.direct == [True]
    assert got == [f"direct {i} " + "x" * (i * 37 % 300) for i in range(500)] + ["asgi"]


async def test_a_compressed_connection_goes_the_asgi_way() -> None:
    app = _App(20)
    async with serve(app, ws_deflate=True) as address:
        got = await asyncio.wait_for(
            _receive_all(
                f"ws://{address}/",
                extensions=[ClientPerMessageDeflateFactory()],
                compression=None,
            ),
            30,
        )
    assert app.direct == [False]
    assert len(got) == 21 and got[-1] == "asgi"
