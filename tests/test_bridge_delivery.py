"""The bridge's inbox: show now, hold, or drop as already shown; no I/O involved."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from claudepeers.bridge.delivery import Inbox, Offer, ShownIds


def msg(message_id: int, body: str = "hi") -> dict:
    return {"id": message_id, "body": body}


def test_push_mode_shows_new_messages_at_once() -> None:
    """A Claude with channels sees a new message immediately."""
    inbox = Inbox(mode="push")
    assert inbox.offer(msg(1)) is Offer.SHOW
    inbox.mark_shown([1])
    assert inbox.offer(msg(2)) is Offer.SHOW


def test_a_shown_message_is_never_shown_again() -> None:
    """After a reconnect the broker pushes unacknowledged mail again; shown ids are dropped."""
    inbox = Inbox(mode="push")
    inbox.offer(msg(1))
    inbox.mark_shown([1])
    assert inbox.offer(msg(1)) is Offer.ALREADY_SHOWN
    assert inbox.hold(msg(1)) is False


def test_inline_mode_holds_until_taken() -> None:
    """A Codex peer's messages wait for its next tool result."""
    inbox = Inbox(mode="inline")
    assert inbox.offer(msg(1)) is Offer.HOLD
    assert inbox.offer(msg(2)) is Offer.HOLD
    assert inbox.offer(msg(1)) is Offer.HOLD  # pushed again while waiting: still one copy
    batch = inbox.take(10, 10_000)
    assert batch.ids == [1, 2] and batch.remaining == 0
    inbox.mark_shown(batch.ids)
    assert inbox.waiting_count == 0
    assert inbox.offer(msg(2)) is Offer.ALREADY_SHOWN


def test_take_is_bounded_and_keeps_order() -> None:
    """A tool result gets whole messages, oldest first, within the bounds; the rest is counted."""
    inbox = Inbox(mode="inline")
    for message_id, size in [(1, 10), (2, 10), (3, 500), (4, 10)]:
        inbox.offer(msg(message_id, "x" * size))
    batch = inbox.take(max_messages=10, max_size=100)
    assert batch.ids == [1, 2]
    assert batch.remaining == 2
    assert inbox.take(max_messages=1, max_size=10_000).ids == [1]


def test_a_message_too_large_for_the_footer_is_left_for_check_messages() -> None:
    """Nothing is cut: a message that does not fit stays waiting, whole."""
    inbox = Inbox(mode="inline")
    inbox.offer(msg(1, "x" * 5000))
    batch = inbox.take(max_messages=5, max_size=100)
    assert batch.ids == [] and batch.remaining == 1
    assert inbox.take(max_messages=5, max_size=10_000).ids == [1]


def test_push_mode_holds_until_the_session_is_ready() -> None:
    """Before the agent's 'initialized', pushes wait; then they all come out in order."""
    inbox = Inbox(mode="push", ready=False)
    assert inbox.offer(msg(2)) is Offer.HOLD
    assert inbox.offer(msg(1)) is Offer.HOLD
    assert inbox.take_ready() == []
    inbox.ready = True
    assert [m["id"] for m in inbox.take_ready()] == [1, 2]
    # While older ones still wait, a newer one waits behind them (order per recipient).
    assert inbox.offer(msg(3)) is Offer.HOLD


def test_fetched_messages_join_the_waiting_ones_without_duplicates() -> None:
    """check_messages merges fetched mail with pushed mail by id."""
    inbox = Inbox(mode="inline")
    inbox.offer(msg(5))
    assert inbox.hold(msg(4)) is True
    assert inbox.hold(msg(5)) is False
    assert inbox.take(10, 10_000).ids == [4, 5]


def test_shown_ids_are_bounded() -> None:
    """The memory of shown ids forgets the oldest beyond its capacity."""
    shown = ShownIds(capacity=3)
    for message_id in range(5):
        shown.add(message_id)
    assert len(shown) == 3 and 0 not in shown and 4 in shown


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=120), st.booleans())
def test_every_message_is_shown_exactly_once(arrivals: list[int], push: bool) -> None:
    """Whatever the order and repetition of pushes, each id is shown once, none lost."""
    inbox = Inbox(mode="push" if push else "inline")
    shown: list[int] = []
    for step, message_id in enumerate(arrivals):
        if inbox.offer(msg(message_id)) is Offer.SHOW:
            shown.append(message_id)
            inbox.mark_shown([message_id])
        if step % 7 == 0:
            batch = inbox.take(3, 10_000)
            shown += batch.ids
            inbox.mark_shown(batch.ids)
    batch = inbox.take(10_000, 10**9)
    shown += batch.ids
    inbox.mark_shown(batch.ids)
    assert sorted(shown) == sorted(set(arrivals))
