"""The broker's side of the rewake hook: WaitForMail answers, claims, and what the sender hears.

Broker logic over a real store with a Clock and stand-in connections (no sockets).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, inlineCallbacks

from broker_fakes import FakeBridge, World


class HookConnection:
    """A hook's connection (after Attach): it only needs an identity."""


@inlineCallbacks
def two_peers(world: World, delivery: str = "inline", auto: bool | None = False) -> Any:
    """A sender and a recipient whose bridge answers pushes per ``auto`` (False: held)."""
    bridge = FakeBridge(delivery, auto)
    recipient, _ = yield world.register(*world.agent(), bridge, name="alice")
    sender, _ = yield world.register(*world.agent(), FakeBridge(), name="bob")
    return recipient, sender, bridge


@pytest_twisted.inlineCallbacks
def test_held_mail_answers_the_waiter_and_the_sender_hears_woke(world: World) -> None:
    """The bridge holds a message: the armed waiter gets it; its Acknowledge(how=woke) answers the sender."""
    alice, bob, bridge = yield two_peers(world)
    hook = HookConnection()
    waited = world.broker.mail.wait_for_mail(alice, hook, None)
    sent = world.broker.send(bob, "alice", "review PR 7")
    answer = yield waited
    assert answer["outcome"] == "mail" and [m["body"] for m in answer["messages"]] == ["review PR 7"]
    assert not sent.called  # the sender waits for the hook, not "queued"
    yield world.broker.acknowledge(alice, [answer["messages"][0]["id"]], via=hook, how="woke")
    result = yield sent
    assert result["status"] == "woke"
    assert bridge.elsewhere == [answer["messages"][0]["id"]]  # the bridge drops its copy


@pytest_twisted.inlineCallbacks
def test_mail_shown_by_the_channel_never_wakes(world: World) -> None:
    """A push answered shown (a channel notification) leaves the waiter waiting."""
    alice, bob, _ = yield two_peers(world, "push", True)
    waited = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    result = yield world.broker.send(bob, "alice", "seen at once")
    assert result["status"] == "shown" and not waited.called


@pytest_twisted.inlineCallbacks
def test_a_push_not_answered_yet_does_not_wake(world: World) -> None:
    """While the bridge has not answered a push, the waiter waits; a held answer wakes it."""
    alice, bob, bridge = yield two_peers(world, "inline", None)
    waited = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    world.broker.send(bob, "alice", "in flight")
    while not bridge.pushed:  # the commit runs in the store's thread
        yield world.store.unread_counts()
    assert not waited.called
    bridge.answer_pending(shown=False)
    assert (yield waited)["outcome"] == "mail"


@pytest_twisted.inlineCallbacks
def test_a_newer_waiter_replaces_the_older(world: World) -> None:
    """Two waiters of one peer: the first is answered replaced at once; the second gets the mail."""
    alice, bob, _ = yield two_peers(world)
    first = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    second = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    assert (yield first) == {"outcome": "replaced", "messages": [], "more": 0}
    world.broker.send(bob, "alice", "for the newest")
    assert (yield second)["outcome"] == "mail"


@pytest_twisted.inlineCallbacks
def test_a_message_handed_out_once_does_not_wake_again_by_itself(world: World) -> None:
    """A waiter that closed without acknowledging: the next waiter is not woken for the same mail
    alone (no wake after every turn), but is with it once something new arrives."""
    alice, bob, _ = yield two_peers(world)
    hook = HookConnection()
    waited = world.broker.mail.wait_for_mail(alice, hook, None)
    world.broker.send(bob, "alice", "too long for a hook, say")
    yield waited
    alice.waits.closed(hook)
    again = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    assert not again.called
    world.broker.send(bob, "alice", "something new")
    answer = yield again
    assert [m["body"] for m in answer["messages"]] == ["too long for a hook, say", "something new"]


@pytest_twisted.inlineCallbacks
def test_a_prompt_hook_and_a_waiter_never_both_get_a_message(world: World) -> None:
    """What a hook's FetchUnread returned is claimed: a waiter started by the same event does not get it."""
    alice, bob, _ = yield two_peers(world)
    world.broker.send(bob, "alice", "one")
    world.clock.advance(2)
    prompt_hook = HookConnection()
    fetched, _ = yield world.broker.fetch_unread(alice, None, prompt_hook)
    assert [m["body"] for m in fetched] == ["one"]
    waited = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    assert not waited.called
    alice.waits.closed(prompt_hook)  # it printed nothing and closed: the claim lapses
    assert (yield waited)["outcome"] == "mail"


@pytest_twisted.inlineCallbacks
def test_the_waiter_hears_when_its_peer_ends(world: World) -> None:
    """The agent session ends: its waiter is answered ended."""
    alice, _, _ = yield two_peers(world)
    waited: Deferred = world.broker.mail.wait_for_mail(alice, HookConnection(), None)
    world.processes.end(alice.record.agent_pid)
    world.broker.reap()
    assert (yield waited)["outcome"] == "ended"


@pytest_twisted.inlineCallbacks
def test_a_bad_how_or_limit_is_refused_clearly(world: World) -> None:
    """Acknowledge's how is shown or woke; WaitForMail's limit is 1 to 1000."""
    from claudepeers.wire.commands import InvalidArgument

    alice, _, _ = yield two_peers(world)
    with pytest.raises(InvalidArgument, match="how must be shown or woke"):
        yield world.broker.acknowledge(alice, [1], how="seen")
    with pytest.raises(InvalidArgument, match="limit must be 1 to 1000"):
        world.broker.mail.wait_for_mail(alice, HookConnection(), 0)
