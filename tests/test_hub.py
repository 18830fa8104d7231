"""The per-connection rules of what to send, without sockets."""

from __future__ import annotations

from gateway.events import encode_event, make_event
from gateway.hub import Connection, Frame, Hub
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, event_frame
from gateway.sessions import Delivery, OrderState, Snapshot


def delivery(cursor: str, user: str = "alice", order: str = "o1", version: int = 1) -> Delivery:
    event = make_event(
        "order.pending", order_id=order, user_id=user, status="pending", version=version
    )
    return Delivery(user, cursor, event, encode_event(event), 0)


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


def test_out_of_order_cursors_from_two_instances_are_both_sent() -> None:
    conn = live_connection()
    offer(conn, delivery("100-0", order="o2"))  # routed by instance B first
    offer(conn, delivery("99-0", order="o1"))  # instance A's, older cursor, later
    assert sent_cursors(conn) == ["100-0", "99-0"]
    assert conn.cursor == "100-0"


def test_a_delivery_routed_twice_is_sent_once() -> None:
    conn = live_connection()
    offer(conn, delivery("5-0", order="o1"))
    offer(conn, delivery("6-0", order="o2"))
    offer(conn, delivery("5-0", order="o1"))  # redelivered after a crash
    assert sent_cursors(conn) == ["5-0", "6-0"]


def test_stale_version_is_dropped_even_with_a_new_cursor() -> None:
    conn = live_connection()
    offer(conn, delivery("5-0", version=2))
    offer(conn, delivery("6-0", version=1))
    offer(conn, delivery("7-0", version=3))
    assert sent_cursors(conn) == ["5-0", "7-0"]


def test_snapshot_seeds_versions_and_horizon() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    offer(conn, delivery("9-0", order="o1", version=2))  # buffered while syncing
    offer(conn, delivery("11-0", order="o2", version=1))
    conn.seed(Snapshot([OrderState("o1", "confirmed", 2, "t")], "10-0"))
    conn.go_live()
    assert sent_cursors(conn) == ["11-0"]


def test_resume_replays_then_flushes_only_newer_live_events() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync("3-0")
    offer(conn, delivery("5-0", order="o2"))  # live, arrived during the replay
    offer(conn, delivery("2-0", order="o9"))  # older than the resume cursor
    assert conn.replay([delivery("4-0", order="o1"), delivery("5-0", order="o2")]) == 2
    conn.go_live()
    assert sent_cursors(conn) == ["4-0", "5-0"]
    assert conn.cursor == "5-0"


def test_another_users_delivery_is_refused() -> None:
    conn = live_connection("alice")
    offer(conn, delivery("5-0", user="bob"))
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
    hub.deliver([delivery(f"{n}-0", user="alice", order=f"o{n}") for n in range(1, 5)])
    hub.deliver([delivery("9-0", user="bob")])
    assert alice.closing is not None and alice.closing.code == CloseCode.CLIENT_TOO_SLOW
    assert sent_cursors(bob) == ["9-0"]
    assert hub.remove(alice) and hub.connection_count() == 1


def test_replayed_frames_are_not_timed_as_pushes() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync("0-0")
    old = Delivery("alice", "4-0", delivery("4-0").event, delivery("4-0").raw, produced_ms=1234)
    conn.replay([old])
    conn.go_live()
    offer(conn, Delivery("alice", "5-0", delivery("5-0", order="o2").event, b"{}", produced_ms=99))
    frames = [conn.queue.get_nowait(), conn.queue.get_nowait()]
    assert [(f.is_event, f.produced_ms) for f in frames if isinstance(f, Frame)] == [
        (True, 0),
        (True, 99),
    ]
