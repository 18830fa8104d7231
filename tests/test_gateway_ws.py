"""The WebSocket protocol end to end: real uvicorn, real `websockets` clients,
events produced onto the in-memory bus of the running gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette

from gateway.app import Gateway
from gateway.metrics import current
from gateway.protocol import CloseCode
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import issue_token
from orderpush_core.bus import OutgoingRecord
from orderpush_core.events import encode_event, make_event
from tests.backends import unique
from tests.harness import serve
from tests.wsclient import connect


@dataclass
class Running:
    addr: str
    app: Starlette

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    async def emit(self, user: str, order: str, version: int, status: str = "pending") -> None:
        event = make_event(
            f"order.{status}", order_id=order, user_id=user, status=status, version=version
        )
        await self.gateway.bus.publish([OutgoingRecord("orders", order, encode_event(event))])


def token(user: str, ttl_s: float = 3600) -> str:
    return issue_token(user, DEV_SECRET, ttl_s=ttl_s)


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    options = getattr(request, "param", {})
    settings = Settings(sessions_url=f"memory://{unique('t')}", **options)
    app = gateway_app(settings)
    async with serve(app, ws_max_size=settings.max_message_bytes) as addr:
        yield Running(addr, app)


async def test_user_receives_own_events_in_order_and_nobody_else_does(running: Running) -> None:
    async with (
        connect(running.addr, token("alice")) as alice,
        connect(running.addr, token("bob")) as bob,
    ):
        await alice.recv_type("snapshot")
        await bob.recv_type("snapshot")
        await running.emit("alice", "o1", 1)
        await running.emit("alice", "o1", 2, "confirmed")
        events = await alice.events(2)
        assert [(e["event"]["type"], e["event"]["version"]) for e in events] == [
            ("order.pending", 1),
            ("order.confirmed", 2),
        ]
        assert events[0]["cursor"] < events[1]["cursor"] or len(events[0]["cursor"]) < len(
            events[1]["cursor"]
        )
        assert await bob.silent(0.5)


async def test_snapshot_on_connect_reflects_current_status(running: Running) -> None:
    await running.emit("carol", "o7", 1)
    await running.emit("carol", "o7", 2, "cancelled")
    await asyncio.sleep(0.3)
    async with connect(running.addr, token("carol")) as carol:
        snapshot = await carol.recv_type("snapshot")
        assert [(o["order_id"], o["status"], o["version"]) for o in snapshot["orders"]] == [
            ("o7", "cancelled", 2)
        ]


async def test_reconnect_with_cursor_gets_exactly_what_was_missed(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        await running.emit("alice", "o1", 1)
        (first,) = await alice.events(1)
    # Offline: three events happen, one of another user in between.
    await running.emit("alice", "o1", 2, "confirmed")
    await running.emit("bob", "o2", 1)
    await running.emit("alice", "o3", 1)
    await running.emit("alice", "o3", 2, "cancelled")
    await asyncio.sleep(0.3)
    async with connect(running.addr, token("alice"), cursor=first["cursor"]) as alice:
        missed = await alice.events(3)
        assert [(e["event"]["order_id"], e["event"]["version"]) for e in missed] == [
            ("o1", 2),
            ("o3", 1),
            ("o3", 2),
        ]
        resumed = await alice.recv_type("resumed")
        assert resumed["replayed"] == 3
        assert resumed["cursor"] == missed[-1]["cursor"]
        await running.emit("alice", "o4", 1)  # and live again afterwards
        (live,) = await alice.events(1)
        assert live["event"]["order_id"] == "o4"


async def test_unusable_cursor_gets_a_snapshot_instead(running: Running) -> None:
    await running.emit("dave", "o1", 1)
    await asyncio.sleep(0.2)
    async with connect(running.addr, token("dave"), cursor="99999999999999-0") as dave:
        snapshot = await dave.recv_type("snapshot")
        assert [o["order_id"] for o in snapshot["orders"]] == ["o1"]


async def test_resume_message_mid_connection_replays(running: Running) -> None:
    async with connect(running.addr, token("erin")) as erin:
        snap = await erin.recv_type("snapshot")
        await running.emit("erin", "o1", 1)
        await running.emit("erin", "o1", 2, "confirmed")
        await erin.events(2)
        await erin.send({"type": "resume", "cursor": snap["cursor"]})
        replay = await erin.events(2)
        assert [e["event"]["version"] for e in replay] == [1, 2]
        assert (await erin.recv_type("resumed"))["replayed"] == 2


async def test_token_from_query_and_cookie(running: Running) -> None:
    async with connect(running.addr, path=f"/ws?token={token('frank')}") as frank:
        assert (await frank.recv_type("welcome"))["user_id"] == "frank"
    headers = {"Cookie": f"orderpush_token={token('gina')}"}
    async with connect(running.addr, additional_headers=headers) as gina:
        assert (await gina.recv_type("welcome"))["user_id"] == "gina"


async def test_ping_pong_and_bad_messages_keep_the_connection(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        await alice.ws.send("this is not json")
        assert (await alice.recv_type("error"))["code"] == "bad_message"
        await alice.send({"type": "teleport"})
        assert (await alice.recv_type("error"))["code"] == "unknown_type"
        await alice.send({"type": "resume"})
        assert (await alice.recv_type("error"))["code"] == "bad_message"
        await alice.send({"type": "ping", "future_field": 1})
        await alice.recv_type("pong")
        await running.emit("alice", "o1", 1)
        assert len(await alice.events(1)) == 1


async def test_bad_token_closes_4001(running: Running) -> None:
    async with connect(running.addr, "not.a.jwt", handshake=False) as client:
        assert await client.closed_with() == CloseCode.TOKEN_INVALID
    forged = issue_token("alice", "another-secret-that-is-long-enough-0000")
    async with connect(running.addr, forged, handshake=False) as client:
        assert await client.closed_with() == CloseCode.TOKEN_INVALID
    expired = token("alice", ttl_s=-10)
    async with connect(running.addr, expired, handshake=False) as client:
        assert await client.closed_with() == CloseCode.TOKEN_INVALID


async def test_token_expiry_during_connection_closes_4001(running: Running) -> None:
    async with connect(running.addr, token("alice", ttl_s=2)) as alice:
        await alice.recv_type("snapshot")
        assert await alice.closed_with(timeout_s=6) == CloseCode.TOKEN_INVALID


async def test_token_of_another_user_closes_the_socket(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        await alice.send({"type": "auth", "token": token("bob")})
        assert await alice.closed_with() == CloseCode.TOKEN_INVALID


@pytest.mark.parametrize("running", [{"auth_timeout_s": 0.5}], indirect=True)
async def test_no_auth_in_time_closes_4008(running: Running) -> None:
    async with connect(running.addr) as client:
        assert await client.closed_with() == CloseCode.AUTH_TIMEOUT
    async with connect(running.addr) as client:
        await client.send({"type": "ping"})
        assert await client.closed_with() == CloseCode.AUTH_TIMEOUT


async def test_foreign_origin_closes_4003(running: Running) -> None:
    async with connect(running.addr, origin="http://evil.example") as client:
        assert await client.closed_with() == CloseCode.ORIGIN_NOT_ALLOWED
    same = f"http://{running.addr}"
    async with connect(running.addr, token("alice"), origin=same) as client:
        await client.recv_type("snapshot")


async def test_message_too_big_closes_1009(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        await alice.ws.send(json.dumps({"type": "ping", "pad": "x" * 200_000}))
        assert await alice.closed_with() == CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("running", [{"rate_limit_per_s": 1, "rate_limit_burst": 5}], indirect=True)
async def test_flooding_client_closes_4029(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        for _ in range(20):
            await alice.send({"type": "ping"})
        assert await alice.closed_with() == CloseCode.RATE_LIMITED


class SilentClient:
    """A WebSocket client that authenticates and then stops reading, with a
    small receive buffer: the server's writes back up for real (kernel
    buffers, then the transport's, then the connection's send queue)."""

    def __init__(self, addr: str, token: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = addr.split(":")
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = json.dumps({"type": "auth", "token": token}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if len(payload) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        self.sock.sendall(header + mask + masked)

    def close_code(self) -> int:
        """Read everything the server sent, up to its close frame's code."""
        self.sock.settimeout(30)
        data = self.buffer
        while True:
            while (frame := _next_frame(data)) is not None:
                opcode, payload, data = frame
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection ended without a close frame")
            data += chunk


def _next_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, rest) of an unmasked frame at the start of `data`,
    None if it is not all there yet."""
    if len(data) < 2:
        return None
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        offset = 4
    elif length == 127:
        offset = 10
    if len(data) < offset:
        return None
    if length == 126:
        length = struct.unpack("!H", data[2:4])[0]
    elif length == 127:
        length = struct.unpack("!Q", data[2:10])[0]
    if len(data) < offset + length:
        return None
    return data[0] & 0x0F, data[offset : offset + length], data[offset + length :]


@pytest.mark.parametrize("running", [{"send_queue_max": 5}], indirect=True)
async def test_client_too_slow_closes_4009_and_others_go_on(running: Running) -> None:
    slow = await asyncio.to_thread(SilentClient, running.addr, token("slow"))
    try:
        async with connect(running.addr, token("fast")) as fast:
            await fast.recv_type("snapshot")
            # About 8 MB of frames: more than the kernel's send buffer (up to
            # 4 MiB here, net.ipv4.tcp_wmem) and the transport's high-water
            # mark hold for a socket that is not read.
            padding = "x" * 2000
            events = [
                make_event(
                    "order.pending",
                    order_id=f"o{i}",
                    user_id="slow",
                    status="pending",
                    version=1,
                    data={"note": padding},
                )
                for i in range(4000)
            ]
            await running.gateway.bus.publish(
                [OutgoingRecord("orders", e.order_id, encode_event(e)) for e in events]
            )
            async with asyncio.timeout(30):
                while current(running.gateway.metrics.slow_closes) < 1:
                    await asyncio.sleep(0.05)
            await running.emit("fast", "f1", 1)
            assert len(await fast.events(1)) == 1
        assert await asyncio.to_thread(slow.close_code) == CloseCode.CLIENT_TOO_SLOW
    finally:
        slow.sock.close()


async def test_poison_record_is_set_aside_and_serving_goes_on(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        bus = running.gateway.bus
        await bus.publish(
            [
                OutgoingRecord("orders", "o1", b"{not json"),
                OutgoingRecord("orders", "o1", json.dumps({"type": "order.pending"}).encode()),
            ]
        )
        await running.emit("alice", "o1", 1)
        (event,) = await alice.events(1)
        assert event["event"]["version"] == 1
        assert current(running.gateway.metrics.poison_records) == 2
        dead = await bus.consumer(["deadletter"], unique("g"))
        records = await dead.getmany(timeout_ms=1000)
        assert [r.value for r in records] == [
            b"{not json",
            json.dumps({"type": "order.pending"}).encode(),
        ]
        assert dict(records[0].headers)["x-orderpush-reason"].startswith(b"JSON is malformed")
        await dead.stop()


async def test_stale_version_is_not_pushed(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        await running.emit("alice", "o1", 2, "confirmed")
        await running.emit("alice", "o1", 1)  # late and stale
        await running.emit("alice", "o2", 1)
        events = await alice.events(2)
        assert [(e["event"]["order_id"], e["event"]["version"]) for e in events] == [
            ("o1", 2),
            ("o2", 1),
        ]


async def test_event_fields_unknown_to_the_gateway_reach_the_client(running: Running) -> None:
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        event = json.loads(
            encode_event(
                make_event(
                    "order.pending", order_id="o1", user_id="alice", status="pending", version=1
                )
            )
        )
        event["shipment_eta"] = "tomorrow"
        await running.gateway.bus.publish(
            [OutgoingRecord("orders", "o1", json.dumps(event).encode())]
        )
        (received,) = await alice.events(1)
        assert received["event"]["shipment_eta"] == "tomorrow"


async def test_server_shutdown_closes_1012() -> None:
    """Clients are told to reconnect (elsewhere) with their cursor."""
    app = gateway_app(Settings(sessions_url=f"memory://{unique('t')}"))
    server = serve(app)
    addr = await server.__aenter__()
    async with connect(addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        stopping = asyncio.create_task(server.__aexit__(None, None, None))
        code = await alice.closed_with(timeout_s=15)
    await stopping
    assert code == CloseCode.SERVICE_RESTART


@pytest.mark.parametrize("running", [{"drain_window_s": 0.6}], indirect=True)
async def test_drain_turns_unready_and_closes_every_socket_1012_with_a_retry_hint(
    running: Running,
) -> None:
    """What SIGTERM runs before uvicorn's shutdown (tests/test_faults_instance.py
    sends the real signal to a real process)."""
    import httpx

    from gateway.drain import retry_after_ms

    users = [f"u{n}" for n in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(running.addr, token(u))) for u in users]
        for client in clients:
            await client.recv_type("snapshot")
        draining = asyncio.create_task(running.gateway.drain())
        async with httpx.AsyncClient(base_url=f"http://{running.addr}") as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["draining"] is True
        # A socket opened during the drain is sent elsewhere at once.
        async with connect(running.addr) as late:
            assert await late.closed_with() == CloseCode.SERVICE_RESTART
            assert retry_after_ms(late.ws.close_reason or "") is not None
        for client in clients:
            assert await client.closed_with() == CloseCode.SERVICE_RESTART
            assert retry_after_ms(client.ws.close_reason or "") is not None
        await asyncio.wait_for(draining, 10)
        assert running.gateway.hub.connection_count() == 0


async def test_query_token_never_reaches_the_logs(capfd: pytest.CaptureFixture[str]) -> None:
    app = gateway_app(Settings(sessions_url=f"memory://{unique('t')}"))
    secret_token = token("alice")
    async with (
        serve(app, log_level="info") as addr,
        connect(addr, path=f"/ws?token={secret_token}") as client,
    ):
        await client.recv_type("welcome")
    logged = capfd.readouterr().err
    assert "WebSocket /ws?token=[redacted]" in logged  # uvicorn logs to stderr
    assert secret_token not in logged


async def test_auth_message_takes_precedence_over_the_cookie(running: Running) -> None:
    headers = {"Cookie": f"orderpush_token={token('cookie-user')}"}
    async with connect(running.addr, token("message-user"), additional_headers=headers) as c:
        assert (await c.recv_type("snapshot"))["type"] == "snapshot"
    async with connect(running.addr, additional_headers=headers) as c:
        await c.send({"type": "auth", "token": token("message-user")})
        assert (await c.recv_type("welcome"))["user_id"] == "message-user"


async def test_trace_context_is_passed_on_to_the_client(running: Running) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with connect(running.addr, token("alice")) as alice:
        await alice.recv_type("snapshot")
        event = make_event("payment.authorized", order_id="o1", user_id="alice")
        await running.gateway.bus.publish(
            [
                OutgoingRecord(
                    "payments", "o1", encode_event(event), (("traceparent", traceparent.encode()),)
                )
            ]
        )
        await running.emit("alice", "o1", 1)  # no trace context: no field
        received = {e["event"]["type"]: e for e in await alice.events(2)}  # two topics
        traced, plain = received["payment.authorized"], received["order.pending"]
        assert traced["traceparent"] == traceparent
        assert "traceparent" not in plain
