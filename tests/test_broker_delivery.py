"""The broker's delivery rules (DESIGN 4) checked on its logic: pushes and acknowledgements,
the limits, a sender's view of its messages and repeated sends (a real store, a Clock, fake processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from claudepeers.broker import peers

from claudepeers.wire import commands as wire
from claudepeers.broker.records import OFFLINE
from claudepeers.common.settings import Limits

from broker_fakes import FakeBridge, World, failure_of, sender_and_offline_bob


# --- delivery -----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_send_to_pushed_peer_is_shown_and_acknowledged(world: World) -> None:
    """A push-mode bridge that shows the message makes the result 'shown', and it is marked read."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge(), name="alice")
    inbox = FakeBridge()
    recipient, _ = yield world.register(a2, b2, inbox, name="bob")
    result = yield world.broker.send(sender, "bob", "hello bob")
    assert result["status"] == "shown"
    assert inbox.pushed[0]["body"] == "hello bob"
    assert inbox.pushed[0]["from_id"] == sender.id and inbox.pushed[0]["verified"] is True
    unread = yield world.store.unread(recipient.id)
    assert unread == [] and recipient.unread == 0


@pytest_twisted.inlineCallbacks
def test_send_to_inline_peer_is_queued_until_acknowledged(world: World) -> None:
    """A Codex-style bridge holds the message: 'queued', then Acknowledge marks it read."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    inbox = FakeBridge(delivery="inline", auto=False)
    recipient, _ = yield world.register(a2, b2, inbox, client_type="codex", name="codex")
    result = yield world.broker.send(sender, "codex", "task")
    assert result["status"] == "queued" and "next tool call" in result["detail"]
    assert recipient.unread == 1
    count = yield world.broker.acknowledge(recipient, [result["message_id"]], via=inbox)
    assert count == 1 and recipient.unread == 0


@pytest_twisted.inlineCallbacks
def test_offline_peer_gets_queued_mail_in_order_on_reconnect(world: World) -> None:
    """Mail to an offline peer is queued and pushed, in order, with the same ids, on reconnect."""
    sender, recipient, (a2, b2) = yield sender_and_offline_bob(world)
    assert recipient.state == OFFLINE
    results = []
    for n in range(5):
        results.append((yield world.broker.send(sender, "bob", f"m{n}")))
    assert {r["status"] for r in results} == {"queued"}
    again = FakeBridge()
    yield world.register(a2, b2, again)
    assert again.ids() == [r["message_id"] for r in results]
    assert [m["body"] for m in again.pushed] == [f"m{n}" for n in range(5)]


@pytest_twisted.inlineCallbacks
def test_unanswered_pushes_are_pushed_again_after_reconnect(world: World) -> None:
    """A message pushed to a connection that died before answering is pushed again."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    lost = FakeBridge(auto=None)
    recipient, _ = yield world.register(a2, b2, lost, name="bob")
    pending = world.broker.send(sender, "bob", "are you there")
    while not lost.pushed:  # the commit runs in the store's thread
        yield world.store.unread_counts()
    world.clock.advance(world.limits.delivery_wait_seconds)
    result = yield pending
    assert result["status"] == "queued"
    world.broker.disconnected(recipient, lost)
    again = FakeBridge()
    yield world.register(a2, b2, again)
    assert again.ids() == lost.ids() == [result["message_id"]]


@pytest_twisted.inlineCallbacks
def test_messages_arriving_during_a_push_go_out_together_in_order(world: World) -> None:
    """One push is in flight per peer; what arrives meanwhile goes out in the next push, in
    acceptance order, and every sender hears "shown" once its message is shown."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    slow = FakeBridge(auto=None)
    yield world.register(a2, b2, slow, name="bob")
    sends = [world.broker.send(sender, "bob", f"{n}") for n in range(50)]
    while len(slow.pushed) < 50:  # the store commits in its thread; answer pushes as they come
        yield world.store.unread_counts()
        slow.answer_pending()
    slow.answer_pending()
    results = yield gatherResults(sends)
    assert [m["body"] for m in slow.pushed] == [str(n) for n in range(50)]
    assert [r["message_id"] for r in results] == sorted(r["message_id"] for r in results)
    assert {r["status"] for r in results} == {"shown"}
    assert len(slow.pushes) < 50 and max(len(push) for push in slow.pushes) > 1


@pytest_twisted.inlineCallbacks
def test_a_push_carries_at_most_the_batch_limit(world: World, monkeypatch: Any) -> None:
    """A backlog larger than one push allows goes out in several pushes, none over the limit."""
    monkeypatch.setattr(peers, "MAX_PUSH_MESSAGES", 4)
    sender, recipient, (a2, b2) = yield sender_and_offline_bob(world)
    for n in range(10):
        yield world.broker.send(sender, "bob", f"{n}")
    back = FakeBridge()
    yield world.register(a2, b2, back)
    assert [len(push) for push in back.pushes] == [4, 4, 2]
    assert [m["body"] for m in back.pushed] == [str(n) for n in range(10)]


@pytest_twisted.inlineCallbacks
def test_a_short_answer_leaves_the_unanswered_messages_unread(world: World) -> None:
    """A bridge answering fewer flags than messages: the unanswered ones stay unacknowledged
    (pushed again after a reconnect), the answered ones are acknowledged."""
    sender, recipient, (a2, b2) = yield sender_and_offline_bob(world)
    first = yield world.broker.send(sender, "bob", "one")
    second = yield world.broker.send(sender, "bob", "two")
    short = FakeBridge(auto=None)
    yield world.register(a2, b2, short)
    (messages, answer), = short.pending
    assert [m["id"] for m in messages] == [first["message_id"], second["message_id"]]
    answer.callback([True])
    unread = yield world.store.unread(recipient.id)
    assert [m.id for m in unread] == [second["message_id"]]


@pytest_twisted.inlineCallbacks
def test_hook_acknowledgement_tells_the_bridge(world: World) -> None:
    """When another client of the peer (a hook) acknowledges, the bridge is told to drop them."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    bridge = FakeBridge(delivery="inline", auto=False)
    recipient, _ = yield world.register(a2, b2, bridge, name="bob")
    result = yield world.broker.send(sender, "bob", "hi")
    yield world.broker.acknowledge(recipient, [result["message_id"]], via=object())
    assert bridge.elsewhere == [result["message_id"]]


@pytest_twisted.inlineCallbacks
def test_cli_messages_are_unverified(world: World) -> None:
    """A message without a registered sender is from 'cli' and marked unverified."""
    agent, bridge = world.agent()
    inbox = FakeBridge()
    yield world.register(agent, bridge, inbox, name="bob")
    yield world.broker.send(None, "bob", "from the terminal")
    assert inbox.pushed[0]["from_id"] == "cli" and inbox.pushed[0]["verified"] is False


# --- limits -------------------------------------------------------------------------------------


@pytest.fixture
def tight(short_dir: Path):
    """A broker with small limits."""
    w = World(short_dir, Limits(max_body_bytes=100, max_summary_bytes=10, messages_per_minute=3, max_unread=4))
    pytest_twisted.blockon(w.broker.start())
    yield w
    pytest_twisted.blockon(w.close())


@pytest_twisted.inlineCallbacks
def test_limits_each_have_a_clear_error_and_cost_nothing_stored(tight: World) -> None:
    """Body size, summary size, rate and unread limits name themselves; nothing stored is lost."""
    a1, b1 = tight.agent()
    a2, b2 = tight.agent()
    sender, _ = yield tight.register(a1, b1, FakeBridge())
    recipient, _ = yield tight.register(a2, b2, FakeBridge(delivery="inline", auto=False), name="bob")
    big = (yield failure_of(tight.broker.send(sender, "bob", "x" * 101)))
    assert isinstance(big, wire.LimitExceeded) and "max_body_bytes" in str(big)
    with pytest.raises(wire.LimitExceeded, match="max_summary_bytes"):
        tight.broker.set_summary(sender, "y" * 11)
    for n in range(3):
        yield tight.broker.send(sender, "bob", f"ok {n}")
    rate = (yield failure_of(tight.broker.send(sender, "bob", "one too many")))
    assert isinstance(rate, wire.LimitExceeded) and "messages_per_minute" in str(rate)
    tight.clock.advance(60)
    yield tight.broker.send(sender, "bob", "ok 3")
    full = (yield failure_of(tight.broker.send(sender, "bob", "inbox full")))
    assert isinstance(full, wire.LimitExceeded) and "max_unread" in str(full)
    stored = yield tight.store.unread(recipient.id)
    assert [m.body for m in stored] == ["ok 0", "ok 1", "ok 2", "ok 3"]


@pytest_twisted.inlineCallbacks
def test_empty_and_self_messages_are_refused(world: World) -> None:
    """An empty message and a message to oneself are clear errors."""
    agent, bridge = world.agent()
    actor, _ = yield world.register(agent, bridge, FakeBridge(), name="solo")
    assert isinstance((yield failure_of(world.broker.send(actor, "solo", "   "))), wire.InvalidArgument)
    assert isinstance((yield failure_of(world.broker.send(actor, "solo", "hi"))), wire.InvalidArgument)


@pytest_twisted.inlineCallbacks
def test_message_state_tells_sender_what_happened(world: World) -> None:
    """A sender can learn whether its message was shown or still waits (and where)."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    conn = FakeBridge()
    recipient, _ = yield world.register(a2, b2, conn, name="bob")
    shown = yield world.broker.send(sender, "bob", "one")
    world.broker.disconnected(recipient, conn)
    waiting = yield world.broker.send(sender, "bob", "two")
    states = yield world.broker.message_states(sender, [shown["message_id"], waiting["message_id"], 999999])
    assert states[str(shown["message_id"])]["state"] == "shown"
    assert states[str(waiting["message_id"])] == {"state": "queued", "recipient_state": OFFLINE, "to_id": recipient.id}
    assert states["999999"]["state"] == "unknown"


@pytest_twisted.inlineCallbacks
def test_repeated_send_with_the_same_client_key_is_stored_and_pushed_once(world: World) -> None:
    """A send repeated after a lost connection (same client_key) returns the first message."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    inbox = FakeBridge()
    yield world.register(a2, b2, inbox, name="bob")
    first = yield world.broker.send(sender, "bob", "only once", client_key="k-1")
    again = yield world.broker.send(sender, "bob", "only once", client_key="k-1")
    other = yield world.broker.send(sender, "bob", "a new one", client_key="k-2")
    assert again["message_id"] == first["message_id"] and again["status"] == "shown"
    assert "already sent" in again["detail"]
    assert inbox.ids() == [first["message_id"], other["message_id"]]
    bad = yield failure_of(world.broker.send(sender, "bob", "x", client_key="k" * 65))
    assert isinstance(bad, wire.InvalidArgument)
