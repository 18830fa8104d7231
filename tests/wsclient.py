"""A small protocol-aware client over the `websockets` library, for tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout_s: float = 5.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout_s)
        message: dict[str, Any] = json.loads(data)
        return message

    async def recv_type(self, kind: str, timeout_s: float = 5.0) -> dict[str, Any]:
        message = await self.recv(timeout_s)
        assert message["type"] == kind, message
        return message

    async def events(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The next `count` event messages (other message types are skipped)."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while len(out) < count:
                message = await self.recv(timeout_s)
                if message["type"] == "event":
                    out.append(message)
        return out

    async def silent(self, for_s: float = 0.5) -> bool:
        """True when nothing arrives for `for_s` seconds."""
        try:
            message = await asyncio.wait_for(self.ws.recv(), for_s)
        except TimeoutError:
            return True
        raise AssertionError(f"expected silence, got {message!r}")

    async def closed_with(self, timeout_s: float = 5.0) -> int | None:
        """Wait for the server's close; return its code."""
        try:
            async with asyncio.timeout(timeout_s):
                async for _ in self.ws:
                    pass
        except websockets.ConnectionClosed:
            pass
        return self.ws.close_code


@asynccontextmanager
async def connect(
    addr: str,
    token: str | None = None,
    *,
    cursor: str | None = None,
    path: str = "/ws",
    handshake: bool = True,
    **kwargs: Any,
) -> AsyncIterator[Client]:
    """Connect; with `token` and `handshake`, auth and read welcome (+snapshot)."""
    async with websockets.connect(f"ws://{addr}{path}", open_timeout=5, **kwargs) as ws:
        client = Client(ws)
        if token is not None:
            auth: dict[str, Any] = {"type": "auth", "token": token}
            if cursor is not None:
                auth["cursor"] = cursor
            await client.send(auth)
            if handshake:
                await client.recv_type("welcome")
        yield client
