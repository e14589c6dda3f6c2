"""Fault injection on real processes (issue 6): databases the broker must refuse (corrupt,
locked, in use by another broker, read-only) and a full disk at the storage boundary.
Every process started here is ended by its pid.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Broker, Credentials
from claudepeers.broker.protocol import BrokerProtocol
from claudepeers.common.settings import Limits
from claudepeers.broker.storage import Store, prepare

from broker_fakes import FakeProcesses
from conftest import ROOT, BrokerProcess, broker_env
from raw_amp import RawAMP
from model_wire import SyncPool
from storage_support import CHILD_PREPARE, LockHolder, fingerprint

# --- databases the broker must refuse -------------------------------------------------------------


def start_broker_expecting_refusal(base: Path, db_path: Path, prefix: list[str] | None = None) -> str:
    """Run a broker on ``db_path``; it must exit 1 promptly; return what it said."""
    env = broker_env(base)
    command = [*(prefix or []), sys.executable, "-m", "claudepeers.broker.main",
               "--socket", env["CLAUDE_PEERS_SOCKET"], "--db", str(db_path)]
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1, (completed.returncode, completed.stderr[-500:])
    assert not os.path.exists(env["CLAUDE_PEERS_SOCKET"]), "a refusing broker must not listen"
    return completed.stderr


def test_broker_refuses_a_corrupt_database_and_leaves_it_untouched(short_dir: Path) -> None:
    """A database full of garbage: exit 1, 'corrupt' and the path on stderr, the bytes unchanged."""
    db_path = short_dir / "peers.db"
    db_path.write_bytes(os.urandom(20_000))
    before = fingerprint(db_path)
    said = start_broker_expecting_refusal(short_dir, db_path)
    assert "corrupt or not a database" in said and str(db_path) in said
    assert fingerprint(db_path) == before
    assert [p.name for p in short_dir.iterdir() if p.name.startswith("peers.db")] == ["peers.db"]


def test_broker_refuses_a_database_locked_by_another_process(short_dir: Path) -> None:
    """Another process holds an exclusive lock (rollback journal): exit 1, 'locked', nothing changed."""
    db_path = short_dir / "peers.db"
    prepare(db_path)
    connection = sqlite3.connect(db_path)
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    before = fingerprint(db_path)
    holder = LockHolder(db_path)
    try:
        said = start_broker_expecting_refusal(short_dir, db_path)
    finally:
        holder.release()
    assert "locked by another process" in said and str(db_path) in said
    assert fingerprint(db_path) == before


def test_broker_refuses_a_database_another_broker_uses(short_dir: Path, broker_process: BrokerProcess) -> None:
    """A second broker on the same database (another socket) exits 1 naming the first one's pid."""
    other = short_dir / "other"
    other.mkdir()
    said = start_broker_expecting_refusal(other, broker_process.settings.db_path)
    assert f"another broker (pid {broker_process.process.pid})" in said  # type: ignore[union-attr]
    assert RawAMP.unix(str(broker_process.socket_path)).call(wire.Ping) == {}


def test_broker_refuses_a_read_only_database_and_leaves_it_untouched(short_dir: Path) -> None:
    """A 0400 database (for a process bound by mode bits): exit 1, 'readable and writable', unchanged."""
    db_path = short_dir / "peers.db"
    prepare(db_path)
    os.chmod(db_path, 0o400)
    before = fingerprint(db_path)
    prefix: list[str] = []
    if os.geteuid() == 0:
        import shutil

        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: mode bits cannot stop root's writes")
        prefix = [setpriv, "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search"]
        probe = subprocess.run([*prefix, sys.executable, "-c", CHILD_PREPARE, str(db_path), str(db_path)],
                               capture_output=True, text=True, cwd=ROOT)
        if probe.returncode != 0 or json.loads(probe.stdout)["writable"]:
            pytest.skip("could not drop root's DAC override here")
    said = start_broker_expecting_refusal(short_dir, db_path, prefix)
    assert "not readable and writable" in said and str(db_path) in said
    assert fingerprint(db_path) == before


# --- a full disk, at the storage boundary ---------------------------------------------------------


class Peer(amp.AMP):
    """A bridge as the broker sees it: every push is shown at once."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[int] = []

    @wire.Deliver.responder
    def deliver(self, messages: list[dict[str, Any]]) -> dict[str, list[bool]]:
        """Record and show."""
        self.pushed += [message["id"] for message in messages]
        return {"shown": [True] * len(messages)}


@pytest.mark.logs_errors  # the store's failure is logged, as it should be
def test_disk_full_fails_the_send_with_broker_unavailable_and_others_carry_on(short_dir: Path) -> None:
    """SQLite reports SQLITE_FULL (file capped at its size): the big Send answers BrokerUnavailable
    naming the cause; every connection stays up, reads work, and sends work again once there is room."""
    db_path = short_dir / "peers.db"
    prepare(db_path)
    pool = SyncPool(db_path)
    clock = Clock()
    processes = FakeProcesses()
    broker = Broker(Store(pool), clock, Limits(), host="h", processes=processes)
    assert broker.start().called
    peers: dict[str, tuple[Peer, iosim.IOPump, str]] = {}
    pumps: list[iosim.IOPump] = []

    def flush() -> None:
        while any([p.pump() for p in pumps]):
            pass

    def call(who: str, command: type[amp.Command], **arguments: Any) -> Any:
        outcome: list[Any] = []
        peers[who][0].callRemote(command, **arguments).addBoth(outcome.append)
        flush()
        return outcome[0]

    for index, name in enumerate(["alice", "bob", "carol"]):
        agent, bridge = 100 + index * 10, 101 + index * 10
        processes.spawn(agent, 1.0)
        processes.spawn(bridge, 2.0, parent=agent)
        client, _server, pump = iosim.connectedServerAndClient(
            lambda bridge=bridge: BrokerProtocol(broker, credentials=lambda _t: Credentials("unix", bridge, 7), uid=7),
            Peer)
        pumps.append(pump)
        peers[name] = (client, pump, "")
        answer = call(name, wire.Register, agent_pid=agent, agent_start=1.0, client_type="claude-code",
                      cwd=f"/w/{name}", name=name, delivery="push")
        peers[name] = (client, pump, answer["peer_id"])
    assert call("alice", wire.Send, to="bob", body="before")["status"] == "shown"

    pages = pool.connection.execute("PRAGMA page_count").fetchone()[0]
    pool.connection.execute(f"PRAGMA max_page_count = {pages}")
    refused = call("alice", wire.Send, to="bob", body="x" * 30_000)
    assert isinstance(refused, Failure) and refused.check(wire.BrokerUnavailable), refused
    assert "full" in refused.getErrorMessage()
    # Everyone carries on: the connections stay, reads and pings are served.
    assert call("alice", wire.Ping) == {}
    assert {p["name"] for p in call("carol", wire.ListPeers, scope="machine")["peers"]} == {"alice", "bob"}
    assert call("bob", wire.FetchUnread)["messages"] == []

    pool.connection.execute("PRAGMA max_page_count = 1073741823")
    after = call("alice", wire.Send, to="bob", body="x" * 30_000)
    assert after["status"] == "shown"
    assert call("carol", wire.Send, to="bob", body="carol too")["status"] == "shown"
    stored = pool.connection.execute("SELECT body FROM messages ORDER BY id").fetchall()
    assert [b[:5] for (b,) in stored] == ["befor", "xxxxx", "carol"], "the refused message left nothing behind"
    assert len(peers["bob"][0].pushed) == 3
    broker.stop()
    pool.close()
