"""Unit tests of the hub's `Connection` (gateway/hub.py), through its API only.

tests/test_hub.py covers the main paths (hold, redelivery, stale version,
snapshot seed, resume, new epoch, another user, replay timing, one gap fill);
these pin the rest of each rule: malformed cursors, every queue bound
(4009), when the gap timer fires and when it must not, the version rule per
order across syncs and fills, and the refusal of an event naming another user.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from gateway.hub import Close, Connection, Frame
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, event_frame
from gateway.sessions import Delivery, Envelope, OrderState, Snapshot
from orderpush_core.events import encode_event, make_event

WAIT_LIMIT_S = 5.0


def delivery(
    cursor: str,
    order: str = "o1",
    version: int | None = 1,
    user: str = "alice",
    event_user: str | None = None,
) -> Delivery:
    if version is None:
        event = make_event("billing.invoiced", order_id=order, user_id=event_user or user)
    else:
        event = make_event(
            "order.pending",
            order_id=order,
            user_id=event_user or user,
            status="pending",
            version=version,
        )
    envelope = Envelope(event=event, raw=encode_event(event), produced_ms=0)
    return Delivery(user_id=user, cursor=cursor, envelope=envelope)


def offer(conn: Connection, d: Delivery) -> None:
    conn.offer(d, event_frame(d.cursor, d.raw))


def live(
    queue_max: int = 100,
    cursor: str = "7-0",
    metrics: GatewayMetrics | None = None,
    *,
    asked: list[str | None] | None = None,
) -> Connection:
    """A live connection at `cursor`; with `asked`, its gap fills are recorded
    there (the cursor each one asks from) after a 10 ms hold."""
    on_gap = None if asked is None else (lambda c: asked.append(c.cursor))
    conn = Connection(
        "alice", "c1", queue_max, metrics or GatewayMetrics(), on_gap=on_gap, gap_wait_s=0.01
    )
    conn.seed(Snapshot([], cursor))
    conn.go_live()
    return conn


def drained(conn: Connection) -> list[str]:
    """Cursors of the event frames queued so far (and a close as `close:CODE`)."""
    out = []
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        if isinstance(item, Close):
            out.append(f"close:{item.code}")
        else:
            out.append(item.text.split('"cursor":"')[1].split('"')[0])
    return out


def counter(metrics: GatewayMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_total")
    assert value is not None
    return value


async def wait_for(condition: list[str | None], count: int) -> None:
    """Until `condition` holds `count` items; bounded by WAIT_LIMIT_S."""
    async with asyncio.timeout(WAIT_LIMIT_S):
        while len(condition) < count:
            await asyncio.sleep(0.005)


# -- position and dedupe -----------------------------------------------------


def test_no_cursor_before_the_first_sync() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    assert conn.cursor is None
    conn.begin_sync(None)  # a snapshot will seed it
    assert conn.cursor is None
    conn.begin_sync("7-3")
    assert conn.cursor == "7-3"


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_is_sent_in_cursor_order_once(seed: int) -> None:
    rng = random.Random(seed)
    cursors = [f"7-{n}" for n in range(1, 16)]
    arrivals = cursors + rng.sample(cursors, 5)  # some routed twice
    rng.shuffle(arrivals)
    conn = live()
    for cursor in arrivals:
        offer(conn, delivery(cursor, order=f"o{cursor}"))
    assert drained(conn) == cursors
    assert conn.cursor == "7-15" and not conn.has_gap


def test_a_held_delivery_routed_twice_is_sent_once() -> None:
    conn = live()
    offer(conn, delivery("7-2", order="o2"))
    offer(conn, delivery("7-2", order="o2"))
    offer(conn, delivery("7-1"))
    assert drained(conn) == ["7-1", "7-2"]


@pytest.mark.parametrize(
    "cursor", ["", "7", "7-", "-1", "a-1", "7-1-2", "7--1", "1-99999999999999999999"]
)
def test_a_malformed_cursor_is_refused_and_changes_nothing(
    cursor: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = live(cursor="7-1")
    with caplog.at_level(logging.ERROR, logger="orderpush.hub"):
        offer(conn, delivery(cursor))
    assert drained(conn) == [] and conn.cursor == "7-1" and not conn.has_gap
    assert "refused a delivery with cursor" in caplog.text


def test_an_older_epoch_is_dropped_even_when_its_seq_is_next() -> None:
    conn = live(cursor="9-4")
    offer(conn, delivery("8-5"))
    assert drained(conn) == [] and conn.cursor == "9-4"


def test_a_new_epoch_drops_what_was_held_from_the_old_one() -> None:
    conn = live(cursor="7-1")
    offer(conn, delivery("7-3", order="o3"))  # held for 7-2
    offer(conn, delivery("9-1", order="o4"))
    offer(conn, delivery("7-2", order="o2"))  # old history: ignored now
    assert drained(conn) == ["9-1"]
    assert conn.cursor == "9-1" and not conn.has_gap


# -- version rule -----------------------------------------------------------


def test_versions_are_kept_per_order_and_an_equal_one_is_dropped() -> None:
    metrics = GatewayMetrics()
    conn = live(metrics=metrics)
    offer(conn, delivery("7-1", order="a", version=2))
    offer(conn, delivery("7-2", order="b", version=1))  # another order: own versions
    offer(conn, delivery("7-3", order="a", version=2))  # repeat of a v2
    offer(conn, delivery("7-4", order="a", version=3))
    assert drained(conn) == ["7-1", "7-2", "7-4"]
    assert counter(metrics, "orderpush_stale_dropped") == 1
    assert conn.cursor == "7-4"


def test_events_without_a_version_are_never_dropped_as_stale() -> None:
    conn = live()
    offer(conn, delivery("7-1", order="a", version=4))
    offer(conn, delivery("7-2", order="a", version=None))
    offer(conn, delivery("7-3", order="a", version=None))
    assert drained(conn) == ["7-1", "7-2", "7-3"]


def test_a_resume_resets_versions_and_a_fill_keeps_them() -> None:
    conn = live()
    offer(conn, delivery("7-1", order="a", version=5))
    conn.begin_fill()
    conn.replay([delivery("7-2", order="a", version=4)], live=True)
    conn.go_live()
    assert drained(conn) == ["7-1"]  # v4 after v5: stale across a fill
    conn.begin_sync("7-2")
    conn.replay([delivery("7-3", order="a", version=4)])
    conn.go_live()
    assert drained(conn) == ["7-3"]  # the resume forgot v5


def test_a_snapshot_seeds_the_versions_it_lists() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync(None)
    conn.seed(Snapshot([OrderState("a", "confirmed", 3, "t")], "7-5"))
    conn.go_live()
    offer(conn, delivery("7-6", order="a", version=3))
    offer(conn, delivery("7-7", order="a", version=4))
    assert drained(conn) == ["7-7"]


# -- queue bounds: 4009 -------------------------------------------------------


def test_a_full_send_queue_closes_4009_once_and_drops_the_rest() -> None:
    metrics = GatewayMetrics()
    conn = live(queue_max=3, metrics=metrics)
    for n in range(1, 7):
        offer(conn, delivery(f"7-{n}", order=f"o{n}"))
    assert drained(conn) == ["7-1", "7-2", "7-3", "close:4009"]
    assert conn.closing == Close(CloseCode.CLIENT_TOO_SLOW, "send buffer full")
    assert counter(metrics, "orderpush_slow_client_closes") == 1


def test_too_many_live_events_during_a_sync_close_4009() -> None:
    metrics = GatewayMetrics()
    conn = Connection("alice", "c1", 2, metrics)
    conn.begin_sync("7-0")
    for n in range(1, 4):
        offer(conn, delivery(f"7-{n}", order=f"o{n}"))
    assert conn.closing is not None and conn.closing.code == 4009
    assert counter(metrics, "orderpush_slow_client_closes") == 1


def test_too_many_held_deliveries_close_4009() -> None:
    conn = live(queue_max=2)
    for n in (3, 4, 5):  # all waiting for 7-1
        offer(conn, delivery(f"7-{n}", order=f"o{n}"))
    assert drained(conn) == ["close:4009"]


def test_a_closed_connection_queues_nothing_more() -> None:
    conn = live()
    conn.close(CloseCode.SERVICE_RESTART, "bye")
    conn.close(CloseCode.CLIENT_TOO_SLOW)  # the first close wins
    offer(conn, delivery("7-1"))
    assert drained(conn) == ["close:1012"]
    assert conn.closing == Close(1012, "bye")


def test_the_bound_counts_frames_not_yet_taken_by_the_sender() -> None:
    conn = live(queue_max=2)
    offer(conn, delivery("7-1", order="o1"))
    offer(conn, delivery("7-2", order="o2"))
    assert drained(conn) == ["7-1", "7-2"]  # the sender took them
    offer(conn, delivery("7-3", order="o3"))
    assert drained(conn) == ["7-3"] and conn.closing is None


# -- hold and gap fill --------------------------------------------------------


async def test_a_gap_filled_in_time_never_asks_for_a_fill() -> None:
    asked: list[str | None] = []
    metrics = GatewayMetrics()
    conn = live(metrics=metrics, asked=asked)
    offer(conn, delivery("7-2", order="o2"))
    offer(conn, delivery("7-1"))  # before the loop ran the timer
    await asyncio.sleep(0.05)
    assert asked == [] and drained(conn) == ["7-1", "7-2"]
    assert counter(metrics, "orderpush_cursor_gap_fills") == 0


async def test_an_expired_gap_asks_once_from_the_last_sent_cursor_and_is_counted() -> None:
    asked: list[str | None] = []
    metrics = GatewayMetrics()
    conn = live(metrics=metrics, asked=asked)
    offer(conn, delivery("7-1"))
    offer(conn, delivery("7-3", order="o3"))
    offer(conn, delivery("7-4", order="o4"))  # same gap: no second timer
    await wait_for(asked, 1)
    await asyncio.sleep(0.05)
    assert asked == ["7-1"]
    assert counter(metrics, "orderpush_cursor_gap_fills") == 1
    assert drained(conn) == ["7-1"] and conn.has_gap


async def test_a_gap_still_open_after_a_fill_is_asked_about_again() -> None:
    asked: list[str | None] = []
    conn = live(asked=asked)
    offer(conn, delivery("7-3", order="o3"))
    await wait_for(asked, 1)
    conn.begin_fill()
    conn.replay([], live=True)  # history did not have 7-1 and 7-2 yet
    conn.go_live()
    await wait_for(asked, 2)
    assert asked == ["7-0", "7-0"]


async def test_no_fill_is_asked_for_a_closed_connection() -> None:
    asked: list[str | None] = []
    conn = live(asked=asked)
    offer(conn, delivery("7-2", order="o2"))
    conn.close(CloseCode.GOING_AWAY)
    await asyncio.sleep(0.05)
    assert asked == []


def test_without_a_filler_a_gap_is_held_without_a_timer() -> None:
    # No running loop here: arming a timer would raise.
    conn = live()
    offer(conn, delivery("7-2", order="o2"))
    assert conn.has_gap and drained(conn) == []


def test_a_replay_with_a_hole_holds_what_is_ahead() -> None:
    conn = Connection("alice", "c1", 100, GatewayMetrics())
    conn.begin_sync("7-0")
    assert conn.replay([delivery("7-1"), delivery("7-3", order="o3")]) == 1
    conn.go_live()
    assert conn.has_gap and drained(conn) == ["7-1"]
    offer(conn, delivery("7-2", order="o2"))
    assert drained(conn) == ["7-2", "7-3"]


# -- one user only ------------------------------------------------------------


@pytest.mark.parametrize(
    ("routed_to", "event_of"), [("bob", "bob"), ("alice", "bob"), ("bob", "alice")]
)
def test_a_delivery_naming_another_user_anywhere_is_refused(
    routed_to: str, event_of: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = live()
    with caplog.at_level(logging.ERROR, logger="orderpush.hub"):
        offer(conn, delivery("7-1", user=routed_to, event_user=event_of))
        assert conn.replay([delivery("7-1", user=routed_to, event_user=event_of)]) == 0
    assert drained(conn) == [] and conn.cursor == "7-0"
    assert f"refused to push {event_of}'s event to alice" in caplog.text


def test_a_refused_delivery_does_not_block_the_next_one() -> None:
    conn = live()
    offer(conn, delivery("7-1", event_user="bob"))
    offer(conn, delivery("7-1"))
    assert drained(conn) == ["7-1"]


def test_frames_are_queued_as_given_and_marked_as_events() -> None:
    conn = live()
    envelope = Envelope(event=delivery("7-1").event, raw=b'{"k":1}', produced_ms=42)
    d = Delivery(user_id="alice", cursor="7-1", envelope=envelope)
    conn.offer(d, "FRAME")
    item = conn.queue.get_nowait()
    assert item == Frame("FRAME", 42, is_event=True)
