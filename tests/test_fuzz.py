"""Property-based fuzzing (hypothesis) of what a client can send.

1. The decoder (`gateway/protocol.py`): any text or bytes gives a client
   message or a `ProtocolError` with a documented code, nothing else.
2. The conversation, through a real uvicorn server (in a thread, so
   hypothesis drives plain blocking clients): any sequence of text and binary
   frames, before or after authentication, gets only documented messages,
   `error` codes and close codes; nothing is logged at ERROR (no exception,
   no 1011); and a bystander connected all along is still served at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from gateway.app import Gateway
from gateway.protocol import Auth, Ping, ProtocolError, Resume, parse_client_message
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import issue_token
from orderpush_core.bus import OutgoingRecord
from orderpush_core.events import encode_event, make_event
from tests.backends import unique
from tests.harness import free_port

MAX_FRAME_BYTES = 4096

# -- what the documentation allows -----------------------------------------------

SERVER_MESSAGES = {"welcome", "snapshot", "event", "resumed", "pong", "error"}
ERROR_CODES = {"bad_message", "unknown_type"}
#: docs/protocol.md "Close codes": what a client's frames alone may lead to.
CLOSE_CODES = {1009, 4001, 4008, 4029}

# -- strategies --------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
types = st.sampled_from(["auth", "ping", "resume", "subscribe", "", "AUTH", "pong"]) | st.text(
    max_size=10
)
cursors = st.sampled_from(["0-0", "1-0", "99999999999999-0", "", "-", "0-"]) | st.text(max_size=30)
tokens = (
    st.sampled_from(["", "a.b.c", "not a token"])
    | st.text(max_size=60)
    | st.builds(lambda u: issue_token(u, DEV_SECRET), st.sampled_from(["fuzz", "other"]))
    | st.builds(lambda u: issue_token(u, DEV_SECRET, ttl_s=-5), st.just("fuzz"))
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """JSON objects shaped like client messages, often almost right."""
    message: dict[str, Any] = {"type": draw(types)}
    if draw(st.booleans()):
        message["token"] = draw(tokens | json_values)
    if draw(st.booleans()):
        message["cursor"] = draw(cursors | json_values)
    message.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return message


text_frames = (
    st.builds(json.dumps, messages())
    | st.builds(json.dumps, json_values)
    | st.text(max_size=200)
    | st.sampled_from(['{"type":"ping"}', "{", "[]", "null", '{"type":1}', "\x00", "{}" * 100])
)
binary_frames = st.binary(max_size=200) | st.builds(str.encode, text_frames)
frames = st.one_of(text_frames, binary_frames)


# -- 1. the decoder ----------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.one_of(text_frames, st.binary(max_size=300), st.text(max_size=300)))
def test_decoder_answers_a_message_or_a_documented_error(data: str | bytes) -> None:
    try:
        message = parse_client_message(data)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        assert isinstance(exc.message, str) and exc.message
    else:
        assert isinstance(message, Auth | Ping | Resume)


# -- 2. the conversation through a real server --------------------------------------


class ErrorLog(logging.Handler):
    """Every record at ERROR or above, from the app's and uvicorn's loggers."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class ThreadedServer:
    """The gateway under uvicorn in a thread of its own, with its own loop."""

    app: Starlette
    port: int = field(default_factory=free_port)
    loop: asyncio.AbstractEventLoop | None = None
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws_max_size=MAX_FRAME_BYTES,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.call_soon(started.set)
            self.loop.run_until_complete(self.server.serve())  # type: ignore[union-attr]
            self.loop.close()

        self.thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
        self.thread.start()
        assert started.wait(10)
        for _ in range(500):
            if self.server.started:
                return
            threading.Event().wait(0.02)
        raise AssertionError("the server did not start")

    def call(self, coroutine: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Fuzzing:
    server: ThreadedServer
    errors: ErrorLog
    bystander: ClientConnection

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.server.app.state.gateway
        return gateway


def _recv(ws: ClientConnection, timeout_s: float) -> dict[str, Any]:
    data = ws.recv(timeout=timeout_s)
    assert isinstance(data, str), f"the server sent a binary frame: {data!r}"
    message: dict[str, Any] = json.loads(data)
    return message


@pytest.fixture(scope="module")
def fuzzing() -> Iterator[Fuzzing]:
    # Generous message and resume rates, so most frames reach the parser
    # (4029 stays a documented answer when they do not).
    app = gateway_app(
        Settings(
            sessions_url=f"memory://{unique('fuzz')}",
            rate_limit_per_s=1000,
            rate_limit_burst=1000,
            resumes_per_minute=10_000,
            auth_timeout_s=2,
            auth_grace_s=0.1,
            max_message_bytes=MAX_FRAME_BYTES,
        )
    )
    server = ThreadedServer(app)
    server.start()
    errors = ErrorLog()
    watched = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in watched:
        logger.addHandler(errors)
    try:
        with ws_connect(server.url, open_timeout=5) as bystander:
            token = issue_token("bystander", DEV_SECRET)
            bystander.send(json.dumps({"type": "auth", "token": token}))
            assert _recv(bystander, 5)["type"] == "welcome"
            assert _recv(bystander, 5)["type"] == "snapshot"
            yield Fuzzing(server, errors, bystander)
    finally:
        for logger in watched:
            logger.removeHandler(errors)
        server.stop()


def converse(
    url: str, authenticate: bool, sequence: list[str | bytes]
) -> tuple[list[dict[str, Any]], int | None]:
    """Send `sequence` (after a valid auth when `authenticate`); everything
    the server answered until it closed or fell silent, and its close code."""
    answers: list[dict[str, Any]] = []
    with ws_connect(url, open_timeout=5, max_size=None) as ws:
        try:
            if authenticate:
                ws.send(json.dumps({"type": "auth", "token": issue_token("fuzz", DEV_SECRET)}))
            for frame in sequence:
                ws.send(frame)
            while True:
                answers.append(_recv(ws, 0.3 if authenticate else 2.5))
        except TimeoutError:
            return answers, None  # silent: still open
        except websockets.ConnectionClosed:
            pass
        return answers, ws.close_code


def check_answers(answers: list[dict[str, Any]], code: int | None) -> None:
    for message in answers:
        assert message.get("type") in SERVER_MESSAGES, message
        if message["type"] == "error":
            assert message.get("code") in ERROR_CODES, message
        if message["type"] in ("welcome", "event"):
            assert message.get("user_id", "fuzz") == "fuzz", message  # never another user's
    assert code is None or code in CLOSE_CODES, (code, answers[-3:])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(authenticate=st.booleans(), sequence=st.lists(frames, max_size=12))
def test_any_frames_get_documented_answers_and_nothing_breaks(
    fuzzing: Fuzzing, authenticate: bool, sequence: list[str | bytes]
) -> None:
    fuzzing.errors.records.clear()  # each example answers for its own log lines
    answers, code = converse(fuzzing.server.url, authenticate, sequence)
    check_answers(answers, code)
    if not authenticate and not sequence:
        assert code == 4008  # no auth in time
    assert not fuzzing.errors.records, [r.getMessage() for r in fuzzing.errors.records]


def test_oversized_and_odd_frames_close_with_documented_codes(fuzzing: Fuzzing) -> None:
    fuzzing.errors.records.clear()
    for authenticate in (False, True):
        for frame in (b"x" * (MAX_FRAME_BYTES + 1), "y" * (MAX_FRAME_BYTES + 1)):
            answers, code = converse(fuzzing.server.url, authenticate, [frame])
            check_answers(answers, code)
            assert code == 1009, (authenticate, code)
    answers, code = converse(fuzzing.server.url, False, [b'{"type":"auth","token":"x"}'])
    assert code == 4008  # binary first frame
    answers, code = converse(fuzzing.server.url, False, ['{"type":"auth","token":"x"}'])
    assert code == 4001
    assert not fuzzing.errors.records, [r.getMessage() for r in fuzzing.errors.records]


def test_zz_the_bystander_was_served_throughout(fuzzing: Fuzzing) -> None:
    """Runs after the fuzzing (pytest keeps the file's order): the socket
    opened before it still answers pings and still gets its own events."""
    fuzzing.errors.records.clear()
    fuzzing.bystander.send(json.dumps({"type": "ping"}))
    assert _recv(fuzzing.bystander, 5)["type"] == "pong"
    event = make_event(
        "order.pending", order_id="o-by", user_id="bystander", status="pending", version=1
    )
    record = OutgoingRecord("orders", "o-by", encode_event(event))
    fuzzing.server.call(fuzzing.gateway.bus.publish([record]))
    got = _recv(fuzzing.bystander, 5)
    assert got["type"] == "event" and got["event"]["event_id"] == event.event_id
    assert fuzzing.gateway.hub.connection_count() == 1  # the fuzz sockets are all gone
    assert not fuzzing.errors.records, [r.getMessage() for r in fuzzing.errors.records]
