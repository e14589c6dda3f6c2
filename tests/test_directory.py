"""The peer directory (broker/directory.py): exact, ended and suggest lookups, the name
index after changes, and the session lookup, on real PeerActors without a broker."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from claudepeers.broker.directory import PeerDirectory
from claudepeers.broker.peers import PeerActor
from claudepeers.broker.records import GONE, OFFLINE, ONLINE, PeerRecord
from claudepeers.common.errors import AmbiguousPeer, UnknownPeer


def _actor(directory: PeerDirectory, peer_id: str, name: str, state: str = ONLINE, gone_at: float | None = None,
           agent_pid: int = 100, thread_id: str | None = None) -> PeerActor:
    record = PeerRecord(id=peer_id, host="h", agent_pid=agent_pid, agent_start=10.0, client_type="claude-code",
                        name=name, cwd="/work", git_root=None, git_common_dir=None, branch=None, tty=None,
                        summary="", state=state, registered_at=1.0, last_seen=1.0, gone_at=gone_at,
                        thread_id=thread_id)
    actor = PeerActor(record, None, Clock(), 5.0, on_change=directory.changed)
    directory.add(actor)
    return actor


def test_exact_finds_an_id_then_a_live_name() -> None:
    """A target is a peer's id, else the name of a live peer; anything else is not exact."""
    directory = PeerDirectory()
    api = _actor(directory, "a1b2c3d4", "api")
    assert directory.exact("a1b2c3d4") is api
    assert directory.exact("api") is api
    assert directory.exact("ap") is None


def test_exact_refuses_a_target_that_is_one_peers_id_and_anothers_name() -> None:
    """An id that is also another peer's name names neither: AmbiguousPeer lists both."""
    directory = PeerDirectory()
    first = _actor(directory, "worker", "builder")
    second = _actor(directory, "b0000001", "worker")
    with pytest.raises(AmbiguousPeer, match="both the id of builder and the name of peer b0000001") as caught:
        directory.exact("worker")
    assert first.id in str(caught.value) and second.id in str(caught.value)


def test_a_gone_peers_name_is_not_exact_but_ended_finds_the_latest() -> None:
    """Names of ended peers leave the live index; ``ended`` gives the one that ended last."""
    directory = PeerDirectory()
    _actor(directory, "old00001", "bob", state=GONE, gone_at=5.0)
    latest = _actor(directory, "old00002", "bob", state=GONE, gone_at=9.0)
    assert directory.exact("bob") is None
    assert directory.ended("bob") is latest
    assert directory.ended("alice") is None


def test_the_name_index_follows_renames_and_removals() -> None:
    """A record replaced (a rename, an end) or a peer removed is seen by the next lookup."""
    directory = PeerDirectory()
    actor = _actor(directory, "c0000001", "first")
    assert directory.exact("first") is actor  # the index is built here
    actor.update(name="second")  # on_change tells the directory
    assert directory.exact("first") is None and directory.exact("second") is actor
    actor.update(state=GONE, gone_at=3.0)
    assert directory.exact("second") is None  # no live peer holds the name now
    assert directory.exact(actor.id) is actor and directory.ended("second") is actor
    assert directory.live_by_name() == {}
    directory.remove(actor.id)
    assert directory.exact(actor.id) is None and len(directory) == 0


def test_suggest_matches_id_and_name_prefixes_in_any_case_never_the_caller() -> None:
    """Suggestions are live peers whose id or name begins with the target, the caller left out."""
    directory = PeerDirectory()
    api = _actor(directory, "d0000001", "Api-Server")
    apple = _actor(directory, "d0000002", "apple")
    _actor(directory, "d0000003", "apricot", state=GONE, gone_at=1.0)
    assert directory.suggest("ap") == [api, apple]
    assert directory.suggest("AP", caller=apple) == [api]
    assert directory.suggest("d0000002") == [apple]


def test_not_found_is_ambiguous_for_several_close_peers_and_unknown_otherwise() -> None:
    """Several close peers: AmbiguousPeer; one or none: UnknownPeer with candidates."""
    directory = PeerDirectory()
    assert "no peers are connected" in str(directory.not_found("x"))
    _actor(directory, "e0000001", "api")
    _actor(directory, "e0000002", "apple", state=OFFLINE)
    several = directory.not_found("ap")
    assert isinstance(several, AmbiguousPeer) and "api" in str(several) and "apple" in str(several)
    one = directory.not_found("app")
    assert isinstance(one, UnknownPeer) and "apple (e0000002, offline)" in str(one) and "api" not in str(one)
    none = directory.not_found("zed")
    assert isinstance(none, UnknownPeer) and "api" in str(none) and "apple" in str(none)


def test_of_session_finds_the_live_peer_of_pid_start_and_thread() -> None:
    """A session is (host, agent pid, start, thread); an ended thread counts only with revive."""
    directory = PeerDirectory()
    process = _actor(directory, "f0000001", "proc", agent_pid=200)
    thread = _actor(directory, "f0000002", "thr", agent_pid=300, thread_id="t1", state=GONE, gone_at=2.0)
    assert directory.of_session("h", 200, 10.0) is process
    assert directory.of_session("other", 200, 10.0) is None
    assert directory.of_session("h", 200, 11.0) is None
    assert directory.of_session("h", 300, 10.0, "t1") is None
    assert directory.of_session("h", 300, 10.0, "t1", revive=True) is thread
