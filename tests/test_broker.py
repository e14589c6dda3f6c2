"""The broker's rules (DESIGN 4) checked on its logic: a real store, a Clock, fake processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults, inlineCallbacks

from claudepeers.broker import peers

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Claim, Credentials
from claudepeers.broker.records import GONE, OFFLINE, ONLINE
from claudepeers.common.settings import Limits

from broker_fakes import FakeBridge, World, failure_of



# --- identity and names ----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_register_gives_short_stable_id_and_default_name_from_repo(world: World) -> None:
    """A new peer gets an 8-char [a-z0-9] id and a name from its repository's directory."""
    agent, bridge = world.agent()
    actor, resumed = yield world.register(agent, bridge, FakeBridge(), git_root="/src/api", cwd="/src/api/pkg")
    assert not resumed
    assert len(actor.id) == 8 and actor.id.isalnum() and actor.id.islower() or actor.id.isdigit()
    assert actor.name == "api"
    assert actor.state == ONLINE


@pytest_twisted.inlineCallbacks
def test_second_peer_in_same_repo_gets_suffixed_name(world: World) -> None:
    """Names are unique among live peers: the second `api` becomes `api-2`."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    first, _ = yield world.register(a1, b1, FakeBridge(), git_root="/src/api")
    second, _ = yield world.register(a2, b2, FakeBridge(), git_root="/src/api")
    assert (first.name, second.name) == ("api", "api-2")


@pytest_twisted.inlineCallbacks
def test_reregistering_same_agent_session_resumes_id_name_summary(world: World) -> None:
    """A new MCP server process under the same agent gets the same id, name and summary."""
    agent, bridge = world.agent()
    old = FakeBridge()
    actor, _ = yield world.register(agent, bridge, old)
    yield world.broker.set_summary(actor, "refactoring auth")
    world.processes.spawn(bridge + 5, 200.0, parent=agent)  # the restarted MCP server
    again, resumed = yield world.register(agent, bridge + 5, FakeBridge())
    assert resumed and again is actor
    assert again.record.summary == "refactoring auth"
    assert old.closed_because is not None  # the stale connection is dropped


@pytest_twisted.inlineCallbacks
def test_same_pid_with_other_start_time_is_a_new_peer(world: World) -> None:
    """A reused pid (different start time) is a different agent session."""
    agent, bridge = world.agent(start=100.0)
    first, _ = yield world.register(agent, bridge, FakeBridge())
    world.processes.end(agent)
    world.processes.spawn(agent, 500.0)
    world.processes.spawn(bridge, 501.0, parent=agent)
    second, resumed = yield world.register(agent, bridge, FakeBridge(), start=500.0)
    assert not resumed and second.id != first.id


@pytest_twisted.inlineCallbacks
def test_claim_of_non_ancestor_agent_is_rejected(world: World) -> None:
    """A bridge cannot claim an agent process that is not above it in the process tree."""
    agent, _ = world.agent()
    _, stranger_bridge = world.agent()
    error = (yield failure_of(world.register(agent, stranger_bridge, FakeBridge())))
    assert isinstance(error, wire.IdentityRejected)
    assert "not an ancestor" in str(error)


@pytest_twisted.inlineCallbacks
def test_claim_with_wrong_start_time_is_rejected(world: World) -> None:
    """The claimed agent start time must match the running process."""
    agent, bridge = world.agent(start=100.0)
    error = (yield failure_of(world.register(agent, bridge, FakeBridge(), start=999.0)))
    assert isinstance(error, wire.IdentityRejected)


@pytest_twisted.inlineCallbacks
def test_tcp_claims_need_a_live_agent(world: World) -> None:
    """Over TCP (no SO_PEERCRED) the agent must still be a running process."""
    d = world.broker.register(FakeBridge(), Credentials("tcp"), Claim(4242, 1.0, "codex", "/x"))
    assert isinstance((yield failure_of(d)), wire.IdentityRejected)


@pytest_twisted.inlineCallbacks
def test_requested_name_taken_is_an_error_naming_the_holder(world: World) -> None:
    """CLAUDE_PEER_NAME / set_name refuse a name another live peer holds."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    first, _ = yield world.register(a1, b1, FakeBridge(), name="reviewer")
    second, _ = yield world.register(a2, b2, FakeBridge())
    error = (yield failure_of(world.broker.set_name(second, "reviewer")))
    assert isinstance(error, wire.NameTaken) and first.id in str(error)


@pytest_twisted.inlineCallbacks
def test_bad_names_get_specific_errors(world: World) -> None:
    """Too long, bad characters and the reserved 'cli' each get their own error."""
    agent, bridge = world.agent()
    actor, _ = yield world.register(agent, bridge, FakeBridge())
    too_long = (yield failure_of(world.broker.set_name(actor, "x" * 65)))
    assert isinstance(too_long, wire.LimitExceeded) and "max_name_chars" in str(too_long)
    assert isinstance((yield failure_of(world.broker.set_name(actor, "has space"))), wire.InvalidArgument)
    assert isinstance((yield failure_of(world.broker.set_name(actor, "cli"))), wire.InvalidArgument)
    assert actor.name == "api"


# --- addressing ----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_target_by_id_or_unique_name(world: World) -> None:
    """Wherever a peer is addressed, its id or its unique name works."""
    agent, bridge = world.agent()
    actor, _ = yield world.register(agent, bridge, FakeBridge(), name="worker")
    assert world.broker.resolve(actor.id) is actor
    assert world.broker.resolve("worker") is actor


@pytest_twisted.inlineCallbacks
def test_names_resolve_after_renames_and_departures(world: World) -> None:
    """Resolution follows every change of names and states: a rename moves the name, and
    a peer that ended frees its name for a live one."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    first, _ = yield world.register(a1, b1, FakeBridge(), name="worker")
    assert world.broker.resolve("worker") is first
    yield world.broker.set_name(first, "builder")
    assert world.broker.resolve("builder") is first
    with pytest.raises(wire.UnknownPeer):
        world.broker.resolve("worker")
    world.processes.end(a1)
    world.broker.reap()
    with pytest.raises(wire.PeerGone):
        world.broker.resolve("builder")
    second, _ = yield world.register(a2, b2, FakeBridge(), name="builder")
    assert world.broker.resolve("builder") is second


@pytest_twisted.inlineCallbacks
def test_unknown_target_lists_candidates(world: World) -> None:
    """An unknown target is an error listing the live peers."""
    agent, bridge = world.agent()
    actor, _ = yield world.register(agent, bridge, FakeBridge(), name="worker")
    with pytest.raises(wire.UnknownPeer) as caught:
        world.broker.resolve("nobody")
    assert "worker" in str(caught.value) and actor.id in str(caught.value)


@pytest_twisted.inlineCallbacks
def test_unknown_target_does_not_list_the_caller(world: World) -> None:
    """The candidates of an unknown target a peer sent to are the other live peers."""
    agent, bridge = world.agent()
    caller, _ = yield world.register(agent, bridge, FakeBridge(), name="caller")
    other_agent, other_bridge = world.agent()
    yield world.register(other_agent, other_bridge, FakeBridge(), name="other")
    with pytest.raises(wire.UnknownPeer) as caught:
        yield world.broker.send(caller, "nobody", "hi")
    assert "other" in str(caught.value) and "caller" not in str(caught.value)


@pytest_twisted.inlineCallbacks
def test_ambiguous_prefix_lists_the_matches(world: World) -> None:
    """A target matching several peers by prefix is ambiguous, with the candidates named."""
    for name in ("api-one", "api-two"):
        agent, bridge = world.agent()
        yield world.register(agent, bridge, FakeBridge(), name=name)
    with pytest.raises(wire.AmbiguousPeer) as caught:
        world.broker.resolve("api")
    assert "api-one" in str(caught.value) and "api-two" in str(caught.value)


# --- scopes ---------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_scopes_machine_directory_repo_exclude_caller(world: World) -> None:
    """machine lists all, directory the same cwd, repo the same git common dir (worktrees too)."""
    common = "/src/api/.git"
    peers = {}
    for key, cwd, root in [
        ("me", "/src/api", "/src/api"),
        ("same_dir", "/src/api", "/src/api"),
        ("worktree", "/src/api-wt", "/src/api-wt"),
        ("other", "/src/web", "/src/web"),
    ]:
        agent, bridge = world.agent()
        actor, _ = yield world.register(agent, bridge, FakeBridge(), cwd=cwd, git_root=root,
                                        git_common_dir="/src/web/.git" if key == "other" else common, name=key.replace("_", "-"))
        peers[key] = actor
    me = peers["me"]
    names = lambda scope: sorted(p["name"] for p in world.broker.list_peers(me, scope))  # noqa: E731
    assert names("machine") == ["other", "same-dir", "worktree"]
    assert names("directory") == ["same-dir"]
    assert names("repo") == ["same-dir", "worktree"]
    with pytest.raises(wire.InvalidArgument):
        world.broker.list_peers(me, "galaxy")


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


@inlineCallbacks
def sender_and_offline_bob(world: World) -> Any:
    """A registered sender, and "bob" registered then disconnected: (sender, bob, bob's pids)."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    offline = FakeBridge(auto=None)
    recipient, _ = yield world.register(a2, b2, offline, name="bob")
    world.broker.disconnected(recipient, offline)
    return sender, recipient, (a2, b2)


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


# --- lifecycle ----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_disconnect_with_live_agent_is_offline_with_dead_agent_is_gone(world: World) -> None:
    """Offline while the agent lives; gone (final) once its process has ended."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    conn1, conn2 = FakeBridge(), FakeBridge()
    p1, _ = yield world.register(a1, b1, conn1)
    p2, _ = yield world.register(a2, b2, conn2)
    world.broker.disconnected(p1, conn1)
    world.processes.end(a2)
    world.broker.disconnected(p2, conn2)
    assert (p1.state, p2.state) == (OFFLINE, GONE)


@pytest_twisted.inlineCallbacks
def test_reaper_marks_gone_keeps_mail_then_purges_after_retention(world: World) -> None:
    """A gone peer's unread mail stays readable until the retention period ends."""
    sender, recipient, (a2, b2) = yield sender_and_offline_bob(world)
    yield world.broker.send(sender, "bob", "left behind")
    world.processes.end(a2)
    world.clock.advance(world.limits.reap_interval_seconds)
    assert recipient.state == GONE
    with pytest.raises(wire.PeerGone):
        world.broker.resolve("bob")
    kept = yield world.broker.inbox(recipient.id, 10)
    assert [m["body"] for m in kept] == ["left behind"]
    world.clock.advance(world.limits.retention_seconds + world.limits.reap_interval_seconds)
    yield world.store.unread_counts()  # wait for the purge's transaction
    assert recipient.id not in world.broker.actors
    assert (yield world.store.unread(recipient.id)) == []


@pytest_twisted.inlineCallbacks
def test_gone_peer_never_comes_back(world: World) -> None:
    """Once gone, a peer's id is not revived, even by a register of a new session."""
    agent, bridge = world.agent()
    conn = FakeBridge()
    actor, _ = yield world.register(agent, bridge, conn)
    world.processes.end(agent)
    world.broker.disconnected(actor, conn)
    new_agent, new_bridge = world.agent()
    again, resumed = yield world.register(new_agent, new_bridge, FakeBridge())
    assert not resumed and again.id != actor.id and actor.state == GONE


@pytest_twisted.inlineCallbacks
def test_restart_restores_peers_offline_with_same_ids(short_dir: Path) -> None:
    """After a broker restart, peers come back offline with their ids, names and unread mail."""
    first = World(short_dir)
    yield first.broker.start()
    a1, b1 = first.agent()
    a2, b2 = first.agent()
    sender, _ = yield first.register(a1, b1, FakeBridge(), name="alice")
    conn = FakeBridge()
    recipient, _ = yield first.register(a2, b2, conn, name="bob")
    first.broker.disconnected(recipient, conn)
    sent = yield first.broker.send(sender, "bob", "kept across restarts")
    yield first.close()
    second = World(short_dir, processes=first.processes)  # the same machine, a restarted broker
    yield second.broker.start()
    restored = second.broker.actors[recipient.id]
    assert restored.name == "bob" and restored.state == OFFLINE and restored.unread == 1
    inbox = FakeBridge()
    again, resumed = yield second.register(a2, b2, inbox)
    assert resumed and again.id == recipient.id
    assert inbox.ids() == [sent["message_id"]]
    yield second.close()


@pytest_twisted.inlineCallbacks
def test_events_are_kept_and_streamed_to_watchers(world: World) -> None:
    """Register and message events reach the history and live watchers."""
    seen = []

    class Watcher:
        def event(self, event):
            seen.append(event)

    world.broker.events.watch(Watcher())
    agent, bridge = world.agent()
    yield world.register(agent, bridge, FakeBridge(), name="bob")
    yield world.broker.send(None, "bob", "hello")
    kinds = [e["kind"] for e in seen]
    assert "register" in kinds and "message" in kinds
    assert [e["kind"] for e in world.broker.events.recent(10)][-2:] == ["register", "message"]


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


@pytest_twisted.inlineCallbacks
def test_list_peers_can_leave_offline_peers_out(world: World) -> None:
    """include_offline=False lists only peers whose bridge is connected."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    a3, b3 = world.agent()
    me, _ = yield world.register(a1, b1, FakeBridge(), name="me")
    yield world.register(a2, b2, FakeBridge(), name="up")
    conn = FakeBridge()
    away, _ = yield world.register(a3, b3, conn, name="away")
    world.broker.disconnected(away, conn)
    assert [p["name"] for p in world.broker.list_peers(me, "machine")] == ["up", "away"]
    assert [p["name"] for p in world.broker.list_peers(me, "machine", include_offline=False)] == ["up"]
