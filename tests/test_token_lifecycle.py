"""Token lifecycle on an open socket (re-auth): a fresh token of the same user
keeps the socket past the first token's expiry, another user's or a bad token
closes it, and many refreshes leave no task, timer or connection behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette

from gateway.app import Gateway
from gateway.protocol import CloseCode
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import issue_token
from tests.backends import unique
from tests.harness import serve
from tests.wsclient import Client, connect


@dataclass
class Running:
    addr: str
    app: Starlette

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    # A generous message rate: the refresh storm below is the point, not 4029.
    settings = Settings(
        sessions_url=f"memory://{unique('tok')}", rate_limit_per_s=10_000, rate_limit_burst=10_000
    )
    app = gateway_app(settings)
    async with serve(app) as addr:
        yield Running(addr, app)


def token(user: str, ttl_s: float) -> str:
    return issue_token(user, DEV_SECRET, ttl_s=ttl_s)


async def alive(client: Client) -> bool:
    await client.send({"type": "ping"})
    return bool((await client.recv(timeout_s=5))["type"] == "pong")


async def until(predicate: object, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_fresh_token_of_the_same_user_keeps_the_socket(running: Running) -> None:
    async with connect(running.addr, token("alice", ttl_s=2)) as alice:
        await alice.recv_type("snapshot")
        await alice.send({"type": "auth", "token": token("alice", ttl_s=60)})
        await asyncio.sleep(3)  # past the first token's exp (second resolution)
        assert await alive(alice)
        # A later token that expires sooner moves the close earlier: 4001 then.
        await alice.send({"type": "auth", "token": token("alice", ttl_s=1)})
        assert await alice.closed_with(timeout_s=5) == CloseCode.TOKEN_INVALID
        assert alice.ws.close_reason == "token expired"


async def test_without_a_fresh_token_the_socket_closes_at_expiry(running: Running) -> None:
    async with connect(running.addr, token("bob", ttl_s=1)) as bob:
        await bob.recv_type("snapshot")
        assert await bob.closed_with(timeout_s=5) == CloseCode.TOKEN_INVALID
        assert bob.ws.close_reason == "token expired"


# Tokens are made when the test runs (made at collection, they could expire first).
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token("mallory", ttl_s=3600), "token is for another user"),
        (lambda: issue_token("carol", "another-secret-of-at-least-32-chars"), "token invalid: "),
        (lambda: token("carol", ttl_s=-5), "token invalid: Signature has expired"),
        (lambda: "not.a.jwt", "token invalid: "),
    ],
)
async def test_a_bad_refresh_closes_4001(
    running: Running, make: Callable[[], str], reason: str
) -> None:
    fresh = make()
    async with (
        connect(running.addr, token("carol", ttl_s=60)) as carol,
        connect(running.addr, token("dave", ttl_s=60)) as dave,
    ):
        await carol.recv_type("snapshot")
        await dave.recv_type("snapshot")
        await carol.send({"type": "auth", "token": fresh})
        assert await carol.closed_with() == CloseCode.TOKEN_INVALID
        assert (carol.ws.close_reason or "").startswith(reason)
        assert await alive(dave)  # the other user is still served


async def test_many_refreshes_leave_no_task_timer_or_connection(running: Running) -> None:
    await asyncio.sleep(0.2)  # let the app's own start-up tasks settle
    before_connect = len(asyncio.all_tasks())
    async with connect(running.addr, token("erin", ttl_s=1)) as erin:
        await erin.recv_type("snapshot")
        assert await alive(erin)
        connected = len(asyncio.all_tasks())
        for _ in range(300):
            await erin.send({"type": "auth", "token": token("erin", ttl_s=60)})
        assert await alive(erin)  # all 300 were handled before this ping
        assert len(asyncio.all_tasks()) == connected
        # Every earlier timer was cancelled: the first token's expiry passes quietly.
        await asyncio.sleep(2)
        assert await alive(erin)
        assert running.gateway.hub.connection_count() == 1
    await until(lambda: running.gateway.hub.connection_count() == 0)
    await until(lambda: len(asyncio.all_tasks()) <= before_connect)
