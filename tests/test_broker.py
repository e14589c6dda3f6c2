"""The broker's rules (DESIGN 4) checked on its logic: a real store, a Clock, fake processes.

Identity and names, addressing, scopes and the peers' lifecycle here; delivery, its limits
and what a sender learns of its messages in ``test_broker_delivery.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted


from claudepeers.wire import commands as wire
from claudepeers.broker.core import Claim, Credentials
from claudepeers.broker.records import GONE, OFFLINE, ONLINE

from broker_fakes import FakeBridge, World, failure_of, sender_and_offline_bob


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
