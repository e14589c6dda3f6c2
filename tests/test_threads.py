"""Threads, reply waits and history (DESIGN 8) on the broker's logic: a real store, a Clock,
fake processes and bridges (``broker_fakes``)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest_twisted
from twisted.internet.defer import inlineCallbacks, maybeDeferred

from claudepeers.broker.replywait import REPLIES, TIMEOUT
from claudepeers.common.errors import InvalidArgument, UnknownMessage

from broker_fakes import FakeBridge, World, failure_of


@inlineCallbacks
def three_peers(world: World, delivery: str = "push") -> Any:
    """Peers a, b, c, each with a bridge that shows pushes at once (or holds them: inline)."""
    actors = []
    for name in ("a", "b", "c"):
        agent, bridge = world.agent()
        connection = FakeBridge(delivery, auto=delivery == "push")
        actor, _ = yield world.register(agent, bridge, connection, name=name)
        actors.append((actor, connection))
    return actors


@pytest_twisted.inlineCallbacks
def test_a_reply_joins_the_thread_of_the_message_it_answers(world: World) -> None:
    """A reply names what it answers; its thread is the first message's id, all the way down."""
    (a, _), (b, b_bridge), _ = yield three_peers(world)
    task = yield world.broker.send(a, "b", "please port the parser")
    assert task["thread_id"] == task["message_id"]
    reply = yield world.broker.send(b, a.id, "done", reply_to=task["message_id"])
    assert reply["thread_id"] == task["message_id"]
    again = yield world.broker.send(a, "b", "thanks; one more thing", reply_to=reply["message_id"])
    assert again["thread_id"] == task["message_id"]
    pushed = {m["id"]: m for m in b_bridge.pushed}
    assert pushed[again["message_id"]]["reply_to"] == reply["message_id"]
    assert pushed[again["message_id"]]["thread_id"] == task["message_id"]
    assert pushed[task["message_id"]]["reply_to"] is None
    assert pushed[task["message_id"]]["thread_id"] == task["message_id"]


@pytest_twisted.inlineCallbacks
def test_a_reply_to_a_message_of_others_or_none_is_refused_alike(world: World) -> None:
    """reply_to must be a message the replier sent or received: another's and a missing one
    get the same clear refusal, and nothing is stored."""
    (a, _), (b, _), (c, c_bridge) = yield three_peers(world)
    task = yield world.broker.send(a, "b", "for b only")
    foreign = yield failure_of(world.broker.send(c, "b", "sneaking in", reply_to=task["message_id"]))
    missing = yield failure_of(world.broker.send(c, "b", "nothing there", reply_to=task["message_id"] + 1000))
    assert isinstance(foreign, UnknownMessage) and isinstance(missing, UnknownMessage)
    assert str(foreign).replace(str(task["message_id"]), "N") == str(missing).replace(
        str(task["message_id"] + 1000), "N")
    assert "you have no message" in str(foreign)
    unread = yield world.store.unread(b.id)
    assert [m.body for m in unread] == []  # b's push bridge was shown the task; nothing else came
    bad = yield failure_of(world.broker.send(c, "b", "x", reply_to=0))
    assert isinstance(bad, InvalidArgument)


@pytest_twisted.inlineCallbacks
def test_the_cli_may_reply_within_the_recipients_own_mail_only(world: World) -> None:
    """The operator's CLI (no peer) replies into a thread of the recipient; not into others'."""
    (a, _), (b, _), _ = yield three_peers(world)
    task = yield world.broker.send(a, "b", "question for b")
    answer = yield world.broker.send(None, "a", "operator here", reply_to=task["message_id"])
    assert answer["thread_id"] == task["message_id"]
    refused = yield failure_of(world.broker.send(None, "c", "no", reply_to=task["message_id"]))
    assert isinstance(refused, UnknownMessage) and "not in the mail of c" in str(refused)


@pytest_twisted.inlineCallbacks
def test_a_waiting_call_is_answered_by_the_reply_and_the_reply_is_not_pushed(world: World) -> None:
    """wait_for_reply returns the reply when it comes; the waiting peer's bridge gets no push
    of it, and its sender hears shown once the bridge acknowledges it."""
    (a, a_bridge), (b, _), _ = yield three_peers(world)
    task = yield world.broker.send(a, "b", "delegated task")
    waiting = world.broker.threads.wait_for_reply(a, a_bridge, task["message_id"], 30.0)
    yield world.store.index_for_search()  # the store's queue has run: the waiter is armed
    assert not waiting.called
    sent = world.broker.send(b, a.id, "result: 42", reply_to=task["message_id"])
    answer = yield waiting
    assert answer["outcome"] == REPLIES and answer["thread_id"] == task["message_id"]
    assert [m["body"] for m in answer["messages"]] == ["result: 42"]
    assert a_bridge.pushed == []
    assert not sent.called  # the sender waits for the acknowledgement, as for any push
    yield world.broker.acknowledge(a, [answer["messages"][0]["id"]], via=a_bridge)
    result = yield sent
    assert result["status"] == "shown"


@pytest_twisted.inlineCallbacks
def test_a_wait_returns_at_once_what_came_before_it_and_names_what_was_shown(world: World) -> None:
    """Replies already unread are returned at once; replies already shown are named, not sent."""
    (a, a_bridge), (b, _), _ = yield three_peers(world, delivery="inline")
    task = yield world.broker.send(a, "b", "task")
    first = yield world.broker.send(b, a.id, "first", reply_to=task["message_id"])
    yield world.broker.acknowledge(a, [first["message_id"]], via=a_bridge)
    second = yield world.broker.send(b, a.id, "second", reply_to=task["message_id"])
    answer = yield world.broker.threads.wait_for_reply(a, a_bridge, task["message_id"], 30.0)
    assert [m["id"] for m in answer["messages"]] == [second["message_id"]]
    assert [m["id"] for m in answer["shown_before"]] == [first["message_id"]]
    after = yield world.broker.threads.wait_for_reply(a, a_bridge, second["message_id"], 0.0)
    assert after["outcome"] == TIMEOUT and after["messages"] == []


@pytest_twisted.inlineCallbacks
def test_a_wait_takes_only_replies_of_its_own_thread(world: World) -> None:
    """Mail of another thread, or a first message, goes the usual way; the wait goes on."""
    (a, a_bridge), (b, _), (c, _) = yield three_peers(world)
    one = yield world.broker.send(a, "b", "task one")
    two = yield world.broker.send(a, "c", "task two")
    waiting = world.broker.threads.wait_for_reply(a, a_bridge, one["message_id"], 30.0)
    yield world.broker.send(c, a.id, "about two", reply_to=two["message_id"])
    yield world.broker.send(c, a.id, "a new topic")
    assert not waiting.called
    assert [m["body"] for m in a_bridge.pushed] == ["about two", "a new topic"]
    world.broker.send(b, a.id, "about one", reply_to=one["message_id"])
    answer = yield waiting
    assert [m["body"] for m in answer["messages"]] == ["about one"]


@pytest_twisted.inlineCallbacks
def test_a_wait_times_out_on_the_clock_and_is_bounded(world: World) -> None:
    """No reply: the wait ends at its timeout (a Clock here); a timeout over the bound is refused."""
    (a, a_bridge), _, _ = yield three_peers(world)
    task = yield world.broker.send(a, "b", "task")
    waiting = world.broker.threads.wait_for_reply(a, a_bridge, task["message_id"], 5.0)
    yield world.store.index_for_search()
    world.clock.advance(4.9)
    assert not waiting.called
    world.clock.advance(0.2)
    answer = yield waiting
    assert answer["outcome"] == TIMEOUT and answer["messages"] == []
    assert a.replies.count == 0
    over = yield failure_of(world.broker.threads.wait_for_reply(a, a_bridge, task["message_id"], 601.0))
    assert isinstance(over, InvalidArgument) and "CLAUDE_PEERS_MAX_WAIT_SECONDS" in str(over)


@pytest_twisted.inlineCallbacks
def test_waiting_on_a_message_of_others_is_refused(world: World) -> None:
    """A peer waits only in its own threads."""
    (a, _), (b, _), (c, c_bridge) = yield three_peers(world)
    task = yield world.broker.send(a, "b", "private")
    refused = yield failure_of(world.broker.threads.wait_for_reply(c, c_bridge, task["message_id"], 1.0))
    assert isinstance(refused, UnknownMessage)


@pytest_twisted.inlineCallbacks
def test_a_wait_ends_with_its_connection_and_the_reply_then_waits_for_the_next_bridge(world: World) -> None:
    """The bridge's connection drops: the wait ends unanswered, and a reply coming after it is
    queued as any message (the next bridge is pushed it, or asks again and gets it)."""
    (a, a_bridge), (b, _), _ = yield three_peers(world)
    task = yield world.broker.send(a, "b", "task")
    waiting = world.broker.threads.wait_for_reply(a, a_bridge, task["message_id"], 30.0)
    yield world.store.index_for_search()
    world.broker.disconnected(a, a_bridge)
    assert a.replies.count == 0 and not waiting.called
    queued = yield world.broker.send(b, a.id, "the answer", reply_to=task["message_id"])
    assert queued["status"] == "queued"
    agent, bridge = a.record.agent_pid, a.bridge_pid
    fresh = FakeBridge("inline", auto=False)
    yield world.register(agent, bridge, fresh, name="a")
    again = yield world.broker.threads.wait_for_reply(a, fresh, task["message_id"], 30.0)
    assert [m["body"] for m in again["messages"]] == ["the answer"]


@pytest_twisted.inlineCallbacks
def test_read_thread_shows_the_callers_part_and_hides_unshown_mail(world: World) -> None:
    """read_thread lists the caller's messages of the thread, oldest first; a reply not shown
    to the caller yet comes without its body; others' messages of the thread are not listed."""
    (a, a_bridge), (b, _), (c, _) = yield three_peers(world, delivery="inline")
    task = yield world.broker.send(a, "b", "task for b")
    reply = yield world.broker.send(b, a.id, "b's answer", reply_to=task["message_id"])
    yield world.broker.send(b, "c", "b tells c", reply_to=task["message_id"])  # b's own follow-up
    seen = yield world.broker.threads.read_thread(a, reply["message_id"], None, None)
    assert seen["thread_id"] == task["message_id"] and seen["more"] == 0
    assert [(m["body"], m.get("unread", False), m["mine"]) for m in seen["messages"]] == [
        ("task for b", False, True), (None, True, False)]
    yield world.broker.acknowledge(a, [reply["message_id"]], via=a_bridge)
    seen = yield world.broker.threads.read_thread(a, task["message_id"], None, 1)
    assert [m["body"] for m in seen["messages"]] == ["b's answer"] and seen["more"] == 1
    everything = yield world.broker.threads.read_thread(None, task["message_id"], None, None)
    assert [m["body"] for m in everything["messages"]] == ["task for b", "b's answer", "b tells c"]
    refused = yield failure_of(world.broker.threads.read_thread(c, reply["message_id"], None, None))
    assert isinstance(refused, UnknownMessage)


@pytest_twisted.inlineCallbacks
def test_search_finds_the_callers_own_mail_by_every_word_newest_first(world: World) -> None:
    """Every word must appear (as a word or the start of one); only mail the caller sent or
    received; FTS5 syntax in the text is only text."""
    (a, a_bridge), (b, _), (c, _) = yield three_peers(world)
    yield world.broker.send(a, "b", "the migration of the parser is done")
    yield world.broker.send(b, a.id, "parser migration: review please")
    yield world.broker.send(b, "c", "parser migration secret for c")
    found = yield world.broker.threads.search(a, "migrat PARSER", None)
    assert [m["body"] for m in found] == ["parser migration: review please", "the migration of the parser is done"]
    assert (yield world.broker.threads.search(a, 'parser" OR NOT "x* NEAR(', None)) == []
    assert [m["body"] for m in (yield world.broker.threads.search(c, "secret", None))] == [
        "parser migration secret for c"]
    empty = yield failure_of(maybeDeferred(world.broker.threads.search, a, "  ...  ", None))
    assert isinstance(empty, InvalidArgument)


@pytest_twisted.inlineCallbacks
def test_search_index_follows_purged_mail(world: World) -> None:
    """Mail deleted by retention leaves the index: the index stays consistent and small."""
    (a, _), (b, _), _ = yield three_peers(world)
    yield world.broker.send(a, "b", "ephemeral words here")
    assert len((yield world.broker.threads.search(b, "ephemeral", None))) == 1
    world.clock.advance(world.limits.retention_seconds + 1)
    yield world.store.purge(world.clock.seconds())
    assert (yield world.broker.threads.search(b, "ephemeral", None)) == []
    with closing(sqlite3.connect(world.db_path)) as db:  # FTS5's own check, on the store's file
        rows = db.execute("INSERT INTO messages_search (messages_search) VALUES ('integrity-check')").fetchall()
    assert rows == []
