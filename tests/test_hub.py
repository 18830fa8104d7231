"""The per-connection rules of what to send, without sockets."""

from __future__ import annotations

import asyncio

from gateway.hub import Connection, Frame, Hub
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, event_frame
from gateway.sessions import Delivery, Envelope, OrderState, Snapshot
from orderpush_core.events import encode_event, make_event


def delivery(cursor: str, user: str = "alice", order: str = "o1", version: int = 1) -> Delivery:
    event = make_event(
        "order.pending", order_id=order, user_id=user, status="pending", version=version
    )
    envelope = Envelope(event=event, raw=encode_event(event), produced_ms=0)
    return Delivery(user_id=user, cursor=cursor, envelope=envelope)


def live_connection(user: str = "alice", queue_max: int = 100) -> Connection:
    conn = Connection(user, "c1", queue_max, GatewayMetrics())
    conn.seed(Snapshot([], "0-0"))
    conn.go_live()
    return conn


def sent_cursors(conn: Connection) -> list[str]:
    cursors = []
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        assert isinstance(item, Frame)
        cursors.append(item.text.split('"cursor":"')[1].split('"')[0])
    return cursors


def offer(conn: Connection, d: Delivery) -> None:
    conn.offer(d, event_frame(d.cursor, d.raw))


def test_an_event_ahead_of_its_predecessor_waits_for_it() -> None:
    conn = live_connection()
    offer(conn, delivery("7-1"))
    offer(conn, delivery("7-3", order="o3"))  # routed by instance B first
    assert sent_cursors(conn) == ["7-1"] and conn.has_gap
    offer(conn, delivery("7-2", order="o2"))  # instance A's, older, later
    assert sent_cursors(conn) == ["7-2", "7-3"]
    assert conn.cursor == "7-3" and not conn.has_gap


def test_a_delivery_routed_twice_is_sent_once() -> None:
    conn = live_connection()
    offer(conn, delivery("7-1", order="o1"))
    offer(conn, delivery("7-2", order="o2"))
    offer(conn, delivery("7-1", order="o1"))  # redelivered after a crash
    assert sent_cursors(conn) == ["7-1", "7-2"]


def test_stale_version_is_dropped_but_moves_the_position_on() -> None:
    conn = live_connection()
    offer(conn, delivery("7-1", version=2))
    offer(conn, delivery("7-2", version=1))
    offer(conn, delivery("7-3", version=3))
    assert sent_cursors(conn) == ["7-1", "7-3"]
    assert conn.cursor == "7-3"


def test_snapshot_seeds_versions_and_position() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    offer(conn, delivery("7-9", order="o1", version=2))  # buffered while syncing
    offer(conn, delivery("7-11", order="o2", version=1))
    conn.seed(Snapshot([OrderState("o1", "confirmed", 2, "t")], "7-10"))
    conn.go_live()
    assert sent_cursors(conn) == ["7-11"]


def test_resume_replays_then_flushes_only_newer_live_events() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync("7-3")
    offer(conn, delivery("7-5", order="o2"))  # live, arrived during the replay
    offer(conn, delivery("7-2", order="o9"))  # older than the resume cursor
    assert conn.replay([delivery("7-4", order="o1"), delivery("7-5", order="o2")]) == 2
    conn.go_live()
    assert sent_cursors(conn) == ["7-4", "7-5"]
    assert conn.cursor == "7-5"


def test_a_new_epoch_is_followed_from_its_start_and_the_old_one_ignored() -> None:
    conn = live_connection()
    offer(conn, delivery("7-1"))
    offer(conn, delivery("9-2", order="o2"))  # history created again, seq 1 not here yet
    assert sent_cursors(conn) == ["7-1"] and conn.has_gap
    offer(conn, delivery("7-2", order="o3"))  # a late route from the old history
    offer(conn, delivery("9-1", order="o4"))
    assert sent_cursors(conn) == ["9-1", "9-2"]
    assert conn.cursor == "9-2"


def test_another_users_delivery_is_refused() -> None:
    conn = live_connection("alice")
    offer(conn, delivery("7-1", user="bob"))
    assert sent_cursors(conn) == []


def test_hub_routes_by_user_and_closes_slow_connections() -> None:
    metrics = GatewayMetrics()
    hub = Hub(metrics)
    alice = Connection("alice", "a", 2, metrics)
    bob = Connection("bob", "b", 100, metrics)
    for conn in (alice, bob):
        assert hub.add(conn)
        conn.seed(Snapshot([], "0-0"))
        conn.go_live()
    hub.deliver([delivery(f"7-{n}", user="alice", order=f"o{n}") for n in range(1, 5)])
    hub.deliver([delivery("8-1", user="bob")])
    assert alice.closing is not None and alice.closing.code == CloseCode.CLIENT_TOO_SLOW
    assert sent_cursors(bob) == ["8-1"]
    assert hub.remove(alice) and hub.connection_count() == 1


def test_replayed_frames_are_not_timed_as_pushes() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync("0-0")
    old_envelope = Envelope(event=delivery("7-1").event, raw=delivery("7-1").raw, produced_ms=1234)
    old = Delivery(user_id="alice", cursor="7-1", envelope=old_envelope)
    conn.replay([old])
    conn.go_live()
    new_envelope = Envelope(event=delivery("7-2", order="o2").event, raw=b"{}", produced_ms=99)
    offer(conn, Delivery(user_id="alice", cursor="7-2", envelope=new_envelope))
    frames = [conn.queue.get_nowait(), conn.queue.get_nowait()]
    assert [(f.is_event, f.produced_ms) for f in frames if isinstance(f, Frame)] == [
        (True, 0),
        (True, 99),
    ]


async def test_a_gap_that_outlives_its_wait_is_handed_to_the_filler() -> None:
    asked: list[str | None] = []
    conn = Connection(
        "alice",
        "c1",
        100,
        GatewayMetrics(),
        on_gap=lambda c: asked.append(c.cursor),
        gap_wait_s=0.05,
    )
    conn.seed(Snapshot([], "7-1"))
    conn.go_live()
    offer(conn, delivery("7-3"))
    await asyncio.sleep(0.02)
    assert asked == []  # still waiting for 7-2
    await asyncio.sleep(0.1)
    assert asked == ["7-1"]  # fill from here
    conn.begin_fill()
    conn.replay([delivery("7-2", order="o2"), delivery("7-3")], live=True)
    conn.go_live()
    assert sent_cursors(conn) == ["7-2", "7-3"] and not conn.has_gap
