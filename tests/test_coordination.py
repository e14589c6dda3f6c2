"""Sending to many, groups and claims on the broker's logic: a real store, a Clock, fake processes."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import inlineCallbacks

from claudepeers.broker.records import GONE, OFFLINE
from claudepeers.common.settings import Limits
from claudepeers.wire import commands as wire

from broker_fakes import FakeBridge, World, failure_of

REPO = dict(git_root="/src/api", git_common_dir="/src/api/.git", cwd="/src/api")



@inlineCallbacks
def peers(world: World, count: int, **claim: Any) -> Any:
    """``count`` registered peers with shown-at-once bridges: [(actor, bridge, agent_pid, bridge_pid)]."""
    made = []
    for _ in range(count):
        agent, bridge_pid = world.agent()
        bridge = FakeBridge()
        actor, _ = yield world.register(agent, bridge_pid, bridge, name=f"p{agent}", **{**REPO, **claim})
        made.append((actor, bridge, agent, bridge_pid))
    return made


def fanout(world: World) -> Any:
    return world.broker.coordination.fanout


def claims(world: World) -> Any:
    return world.broker.coordination.claims


# --- many recipients ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_scope_send_reaches_each_peer_once_and_an_offline_one_on_reconnect(world: World) -> None:
    """scope:repo to five peers, one offline: four shown, one queued, each its own message;
    the offline one gets it when its bridge is back; the sender is not among them."""
    (sender, _, _, _), *others = yield peers(world, 6)
    offline_actor, _, agent, bridge_pid = others[4]
    world.broker.disconnected(offline_actor, offline_actor.connection)
    assert offline_actor.state == OFFLINE
    answer = yield fanout(world).send(sender, "scope:repo", "standup in five")
    outcomes = {o["to_id"]: o for o in answer["recipients"]}
    assert set(outcomes) == {actor.id for actor, *_ in others}
    assert sender.id not in outcomes
    assert [outcomes[a.id]["status"] for a, *_ in others] == ["shown"] * 4 + ["queued"]
    assert "offline" in outcomes[offline_actor.id]["detail"]
    assert len({o["message_id"] for o in outcomes.values()}) == 5
    for actor, bridge, *_ in others[:4]:
        assert [m["body"] for m in bridge.pushed] == ["standup in five"]
    back = FakeBridge()
    yield world.register(agent, bridge_pid, back, **REPO)
    assert back.ids() == [outcomes[offline_actor.id]["message_id"]]


@pytest_twisted.inlineCallbacks
def test_directory_and_machine_scopes_choose_their_peers(world: World) -> None:
    """scope:directory is the same cwd, scope:machine everyone else; gone peers are left out."""
    (a, *_), (b, *_) = yield peers(world, 2)
    (c, *_), (d, _, d_agent, _) = yield peers(world, 2, cwd="/elsewhere", git_root=None, git_common_dir=None)
    world.processes.end(d_agent)
    world.broker.reap()
    assert d.state == GONE
    by_dir = yield fanout(world).send(a, "scope:directory", "hi")
    assert [o["to_id"] for o in by_dir["recipients"]] == [b.id]
    everyone = yield fanout(world).send(a, "scope:machine", "hi")
    assert {o["to_id"] for o in everyone["recipients"]} == {b.id, c.id}
    network = yield fanout(world).send(a, "scope:network", "hi")
    assert {o["to_id"] for o in network["recipients"]} == {b.id, c.id}


@pytest_twisted.inlineCallbacks
def test_fanout_is_bounded_with_an_error_naming_the_setting(short_dir: Any) -> None:
    """More recipients than max_fanout: refused whole, nothing stored."""
    world = World(short_dir, limits=Limits(max_fanout=2))
    yield world.broker.start()
    try:
        (a, *_), *_rest = yield peers(world, 4)
        error = yield failure_of(fanout(world).send(a, "scope:machine", "hi"))
        assert isinstance(error, wire.LimitExceeded) and "CLAUDE_PEERS_MAX_FANOUT" in str(error)
        stored = yield world.store.unread(_rest[0][0].id)
        assert stored == []
    finally:
        yield world.close()


@pytest_twisted.inlineCallbacks
def test_a_full_inbox_is_refused_for_that_recipient_only(short_dir: Any) -> None:
    """One recipient at its unread limit hears refused; the others get the message."""
    world = World(short_dir, limits=Limits(max_unread=1))
    yield world.broker.start()
    try:
        (a, *_), (b, bridge_b, *_), (c, *_) = yield peers(world, 3)
        bridge_b.auto = False  # b holds what it gets: its unread count grows
        yield world.broker.send(a, b.id, "first")
        answer = yield fanout(world).send(a, "scope:repo", "second")
        status = {o["to_id"]: o["status"] for o in answer["recipients"]}
        assert status == {b.id: "refused", c.id: "shown"}
        refused = next(o for o in answer["recipients"] if o["to_id"] == b.id)
        assert refused["message_id"] is None and "max_unread" in refused["detail"]
    finally:
        yield world.close()


@pytest_twisted.inlineCallbacks
def test_empty_and_unknown_audiences_are_clear_errors(world: World) -> None:
    """Nobody else in scope, a bad scope, a bad group name: each a specific error."""
    ((a, *_),) = yield peers(world, 1)
    assert isinstance((yield failure_of(fanout(world).send(a, "scope:repo", "x"))), wire.UnknownPeer)
    assert isinstance((yield failure_of(fanout(world).send(a, "scope:galaxy", "x"))), wire.InvalidArgument)
    assert isinstance((yield failure_of(fanout(world).send(a, "group:bad name", "x"))), wire.InvalidArgument)
    assert isinstance((yield failure_of(fanout(world).send(None, "scope:repo", "x"))), wire.NotRegistered)


@pytest_twisted.inlineCallbacks
def test_a_send_to_many_with_a_nul_character_is_an_invalid_argument(world: World) -> None:
    """As for one recipient: a body with U+0000 is refused as InvalidArgument on both engines,
    and nothing is stored."""
    (a, *_), (b, *_) = yield peers(world, 2)
    assert isinstance((yield failure_of(world.broker.send(a, b.id, "nul\x00here"))), wire.InvalidArgument)
    assert isinstance((yield failure_of(fanout(world).send(a, "scope:repo", "nul\x00here"))), wire.InvalidArgument)
    assert (yield world.store.unread(b.id)) == []


@pytest_twisted.inlineCallbacks
def test_a_repeated_fanout_with_the_same_key_is_stored_once(world: World) -> None:
    """A send to many repeated with its client key (a lost answer) stores nothing new."""
    (a, *_), (b, bridge_b, *_), (c, bridge_c, *_) = yield peers(world, 3)
    first = yield fanout(world).send(a, "scope:repo", "once", client_key="k1")
    again = yield fanout(world).send(a, "scope:repo", "once", client_key="k1")
    assert [o["message_id"] for o in first["recipients"]] == [o["message_id"] for o in again["recipients"]]
    assert len(bridge_b.pushed) == len(bridge_c.pushed) == 1


# --- groups ---------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_group_membership_survives_reconnects_and_broker_restarts_and_ends_with_the_peer(world: World) -> None:
    """Joined once, a peer stays in its group across a reconnect and a broker restart; gone, it leaves."""
    (a, *_), (b, _, b_agent, b_bridge), (c, *_) = yield peers(world, 3)
    groups = world.broker.coordination.groups
    yield groups.join(b.id, "reviewers")
    yield groups.join(c.id, "reviewers")
    world.broker.disconnected(b, b.connection)
    yield world.register(b_agent, b_bridge, FakeBridge(), **REPO)
    assert sorted(groups.members("reviewers")) == sorted([b.id, c.id])
    answer = yield fanout(world).send(a, "group:reviewers", "please review")
    assert sorted(o["to_id"] for o in answer["recipients"]) == sorted([b.id, c.id])
    # A new broker over the same database keeps the memberships.
    from claudepeers.broker.core import Broker

    world.broker.stop()
    world.broker = Broker(world.store, world.clock, world.limits, host="testhost", processes=world.processes)
    yield world.broker.start()
    assert sorted(world.broker.coordination.groups.members("reviewers")) == sorted([b.id, c.id])
    world.processes.end(c.record.agent_pid)
    world.broker.reap()
    assert world.broker.coordination.groups.members("reviewers") == [b.id]
    rows = yield world.store.load_group_members()
    assert [(g, p) for g, p, _ in rows] == [("reviewers", b.id)]


@pytest_twisted.inlineCallbacks
def test_the_sender_in_its_own_group_is_not_a_recipient(world: World) -> None:
    """A member sending to its group reaches the others only."""
    (a, *_), (b, *_) = yield peers(world, 2)
    groups = world.broker.coordination.groups
    yield groups.join(a.id, "team")
    yield groups.join(b.id, "team")
    answer = yield fanout(world).send(a, "group:team", "hello team")
    assert [o["to_id"] for o in answer["recipients"]] == [b.id]
    assert (yield groups.leave(b.id, "team")) is True
    assert (yield groups.leave(b.id, "team")) is False


# --- claims ---------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_overlapping_claim_of_another_peer_is_refused_naming_holder_and_reason(world: World) -> None:
    """b cannot claim what a holds (nothing of b's call is granted); disjoint paths are fine."""
    (a, *_), (b, *_) = yield peers(world, 2)
    yield claims(world).claim(a.id, a.record, ["src/auth/**"], "refactoring auth", 600)
    error = yield failure_of(claims(world).claim(b.id, b.record, ["docs/x.md", "src/auth/login.py"], "fix", 60))
    assert isinstance(error, wire.ClaimConflict)
    assert a.name in str(error) and a.id in str(error) and "refactoring auth" in str(error)
    assert claims(world).live(peer_id=b.id) == []
    made = yield claims(world).claim(b.id, b.record, ["docs/*.md", "/src/api/src/web"], "docs", 60)
    assert [c.pattern for c in made] == ["docs/*.md", "src/web"]
    own = yield claims(world).claim(a.id, a.record, ["src/auth/login.py"], "mine too", 60)
    assert own  # a peer may overlap its own claims


@pytest_twisted.inlineCallbacks
def test_claims_expire_on_the_clock_and_end_with_their_holder(world: World) -> None:
    """A lease ends at its expiry (the broker's clock); a gone holder's claims end at once."""
    (a, *_), (b, _, b_agent, _), (c, *_) = yield peers(world, 3)
    yield claims(world).claim(a.id, a.record, ["src"], "short", 30)
    yield claims(world).claim(b.id, b.record, ["docs"], "long", 3000)
    world.clock.advance(29)
    assert isinstance((yield failure_of(claims(world).claim(c.id, c.record, ["src/x"], "", 60))), wire.ClaimConflict)
    world.clock.advance(1)
    yield claims(world).claim(c.id, c.record, ["src/x"], "", 60)
    world.processes.end(b_agent)
    world.broker.reap()
    yield claims(world).claim(c.id, c.record, ["docs/y"], "", 60)
    stored = yield world.store.load_claims()
    assert sorted(row[2] for row in stored) == ["docs/y", "src/x"]


@pytest_twisted.inlineCallbacks
def test_release_and_the_guard_check(world: World) -> None:
    """release_paths ends named claims (or all); CheckPaths names claims of others covering paths."""
    (a, *_), (b, *_) = yield peers(world, 2)
    yield claims(world).claim(a.id, a.record, ["src/*.py", "docs"], "work", 60)
    hits = claims(world).conflicts(REPO["git_common_dir"], ["src/a.py", "src/d/a.py", "README"], exclude=b.id)
    assert [(h["path"], h["pattern"]) for h in hits] == [("src/a.py", "src/*.py")]
    assert claims(world).conflicts(REPO["git_common_dir"], ["src/a.py"], exclude=a.id) == []
    released, not_held = yield claims(world).release(a.id, a.record, ["src/*.py", "lib"])
    assert (released, not_held) == (["src/*.py"], ["lib"])
    released, _ = yield claims(world).release(a.id, a.record, None)
    assert released == ["docs"]


@pytest_twisted.inlineCallbacks
def test_claims_need_a_repository_and_bounded_leases(world: World) -> None:
    """Outside git, a lease beyond the bound, a path outside the repository: each refused."""
    ((a, *_),) = yield peers(world, 1)
    ((n, *_),) = yield peers(world, 1, cwd="/tmp/x", git_root=None, git_common_dir=None)
    assert "git repository" in str((yield failure_of(claims(world).claim(n.id, n.record, ["a"], "", 60))))
    assert "CLAUDE_PEERS_MAX_CLAIM_SECONDS" in str((yield failure_of(
        claims(world).claim(a.id, a.record, ["a"], "", 10**9))))
    assert "outside your repository" in str((yield failure_of(claims(world).claim(a.id, a.record, ["/etc"], "", 60))))


@pytest_twisted.inlineCallbacks
def test_list_peers_shows_groups_and_claims(world: World) -> None:
    """Each listed peer carries its groups and live claims."""
    (a, *_), (b, *_) = yield peers(world, 2)
    yield world.broker.coordination.groups.join(b.id, "ops")
    yield claims(world).claim(b.id, b.record, ["deploy"], "release 1.2", 60)
    (listed,) = world.broker.list_peers(a, "machine")
    assert listed["groups"] == ["ops"]
    assert [(c["pattern"], c["reason"]) for c in listed["claims"]] == [("deploy", "release 1.2")]


@pytest_twisted.inlineCallbacks
def test_a_single_send_to_a_scope_says_to_send_to_many(world: World) -> None:
    """An old client's Send to scope:... or group:... is refused with what to use instead."""
    (a, *_), _ = yield peers(world, 2)
    error = yield failure_of(world.broker.send(a, "scope:repo", "hi"))
    assert isinstance(error, wire.InvalidArgument) and "SendMany" in str(error)
