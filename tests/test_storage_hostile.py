"""Storage under a hostile local user (issue 11, items 5, 8, 9): real broker processes.

The database deleted or replaced while the broker runs, a write-ahead log with one byte
flipped after a kill -9, files left readable by others, a full disk. Traffic comes from
an unregistered UNIX connection (a CLI send) to a peer registered over TCP for a stand-in
agent (``sleep``), as in test_faults.py. Every process started here is ended by its pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from claudepeers.wire import commands as wire
from claudepeers.broker.storage import database, prepare

from cli_support import cli
from conftest import BrokerProcess, broker_env
from raw_amp import RawAMP, RemoteError
from fault_support import StandIns, free_port, register, tcp_session


class Running:
    """A broker with TCP on, a registered recipient ``bob`` and a CLI connection to send from."""

    def __init__(self, base: Path, **env: str) -> None:
        self.base = base
        self.port = free_port()
        self.broker = BrokerProcess(base, broker_env(base, **env), args=["--tcp", str(self.port)])
        self.agents = StandIns()
        self.agent = self.agents.start()
        self.bob: RawAMP | None = None
        self.cli: RawAMP | None = None

    def start(self) -> "Running":
        """Start the broker, register bob, open the sending connection."""
        self.broker.start()
        deadline = time.monotonic() + 10
        while True:
            try:  # the broker writes its token, then listens on TCP, after its UNIX socket
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # another process's start; nothing to subscribe to
        self.bob = RawAMP.tcp(self.port, self.broker.settings.token_path.read_text().strip())
        self.bob_id = register(self.bob, tcp_session("bob"), "/work/bob")["peer_id"]
        self.cli = RawAMP.unix(str(self.broker.socket_path))
        return self

    def send(self, body: str) -> dict[str, Any] | RemoteError:
        """One send to bob: its answer, or the error the broker gave."""
        assert self.cli is not None
        try:
            return self.cli.call(wire.Send, to=self.bob_id, body=body)
        except RemoteError as error:
            return error

    def status(self) -> dict[str, Any]:
        """The broker's status."""
        assert self.cli is not None
        return self.cli.call(wire.Status)["status"]

    def doctor(self) -> dict[str, Any]:
        """``claude-peers doctor --json`` in this broker's environment."""
        done = cli(self.broker.env, "doctor", "--json")
        assert done.stdout, done.stderr
        report = json.loads(done.stdout)
        report["exit"] = done.returncode
        return report

    def wait_for_rescue(self, timeout: float = 10.0) -> list[str]:
        """The storage problems once the broker has reported its rescue copy (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            problems = self.status()["storage"]["problems"]
            if any("rescue" in p for p in problems):
                return problems
            time.sleep(0.02)  # the rescue runs in the broker's database thread
        raise TimeoutError("the broker reported no rescue copy")

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker (by pid) and start it again."""
        self.close_connections()
        self.broker.stop(sig)
        self.start()

    def close_connections(self) -> None:
        """Close both client connections."""
        for client in (self.bob, self.cli):
            if client is not None:
                client.close()

    def close(self) -> None:
        """End everything this test started, by pid."""
        self.close_connections()
        self.broker.stop(signal.SIGKILL)
        self.agents.end_all()


@pytest.fixture
def running(short_dir: Path) -> Iterator[Running]:
    """A started broker with bob registered."""
    world = Running(short_dir)
    try:
        yield world.start()
    finally:
        world.close()


def unread_bodies(path: Path) -> list[str]:
    """Bodies stored in the database file at ``path`` (a separate connection)."""
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("SELECT body FROM messages ORDER BY id")]
    finally:
        connection.close()


# --- the database file deleted or replaced under the running broker ------------------------------


def test_deleted_database_refuses_sends_says_why_and_rescues_what_it_held(running: Running) -> None:
    """rm of the database: no later send is answered as stored (the issue saw 200 answered and
    0 after a restart); each is refused BrokerUnavailable naming the deletion; status and doctor
    say so; what the broker held is rescued beside the path."""
    before = [running.send(f"before {n}") for n in range(5)]
    assert all(isinstance(answer, dict) for answer in before), before
    db_path = running.broker.settings.db_path
    os.unlink(db_path)
    answers = [running.send(f"after {n}") for n in range(200)]
    stored = [a for a in answers if isinstance(a, dict)]
    assert stored == [], f"{len(stored)} sends answered as stored into a deleted file"
    assert all(a.code == "BROKER_UNAVAILABLE" and "deleted" in a.description for a in answers), answers[0]
    problems = running.wait_for_rescue()
    assert any("deleted" in p for p in problems), problems
    assert running.status()["storage"]["ok"] is False
    report = running.doctor()
    assert report["exit"] != 0 and "deleted" in report["verdict"], report
    rescued = sorted(db_path.parent.glob(db_path.name + ".rescued-*"))
    assert len(rescued) == 1 and stat.S_IMODE(rescued[0].stat().st_mode) == 0o600
    assert unread_bodies(rescued[0]) == [f"before {n}" for n in range(5)]
    assert "deleted" in running.broker.log_text() and "Traceback" not in running.broker.log_text()


def test_replaced_database_refuses_sends_and_nothing_answered_is_lost(running: Running, short_dir: Path) -> None:
    """Another file renamed over the database: sends are refused naming the replacement; every
    send answered as stored is in the file rescued from the broker."""
    other = short_dir / "other.db"
    prepare(other)
    answered = [running.send(f"m{n}") for n in range(20)]
    os.replace(other, running.broker.settings.db_path)
    answers = [running.send(f"late{n}") for n in range(50)]
    assert not [a for a in answers if isinstance(a, dict)]
    assert all(a.code == "BROKER_UNAVAILABLE" and "replaced" in a.description for a in answers)
    problems = running.wait_for_rescue()
    assert any("replaced" in p for p in problems), problems
    # The broker's WAL, still named after the path, was emptied: it cannot be replayed into the new file.
    assert unread_bodies(running.broker.settings.db_path) == []
    assert all(isinstance(a, dict) for a in answered)
    rescued = sorted(short_dir.glob("peers.db.rescued-*"))
    kept = unread_bodies(rescued[0])
    # A refused send may sit in the rescued file (committed, then refused): never the reverse.
    assert kept[:20] == [f"m{n}" for n in range(20)] and all(b.startswith("late") for b in kept[20:]), kept


# --- a write-ahead log damaged after a kill -9 ------------------------------------------------------


def test_a_flipped_byte_in_the_wal_after_kill_9_is_reported_and_the_wal_kept(running: Running) -> None:
    """50 acknowledged sends, kill -9, one byte flipped in the middle of the WAL: the restarted
    broker says recovery discarded committed transactions (the issue saw 28 of 50 silently
    gone), keeps a 0600 copy of the damaged WAL, and status and doctor say it."""
    answers = [running.send(f"wal {n}") for n in range(50)]
    assert all(isinstance(a, dict) for a in answers)
    running.close_connections()
    running.broker.stop(signal.SIGKILL)
    wal = Path(f"{running.broker.settings.db_path}-wal")
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    frames = (len(data) - 32) // (24 + page_size)
    assert frames > 20, "the kill left the commits in the WAL"
    data[32 + (frames // 2) * (24 + page_size) + 100] ^= 0x01
    wal.write_bytes(bytes(data))
    damaged = bytes(data)
    running.start()
    log = running.broker.log_text()
    assert "recovery loses messages" in log and "discards" in log, log[-2000:]
    assert "integrity check" in log
    lost = 50 - sum(1 for b in unread_bodies(running.broker.settings.db_path) if b.startswith("wal "))
    said = int(re.search(r"discards (\d+) committed", log).group(1))
    assert 0 < lost <= said, (lost, said)  # each lost send was its own commit; none goes unreported
    copies = sorted(wal.parent.glob(wal.name + ".damaged-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == damaged
    assert stat.S_IMODE(copies[0].stat().st_mode) == 0o600
    problems = running.status()["storage"]["problems"]
    assert any("damaged" in p and str(copies[0]) in p for p in problems), problems
    report = running.doctor()
    assert any("damaged" in f["text"] for f in report["findings"] if f["level"] in ("warn", "problem")), report


def test_a_kill_9_without_damage_reports_nothing(running: Running) -> None:
    """No false alarm: a plain kill -9 leaves a WAL whose every commit recovery keeps."""
    assert all(isinstance(running.send(f"n{n}"), dict) for n in range(30))
    running.close_connections()
    running.broker.stop(signal.SIGKILL)
    running.start()
    assert running.status()["storage"]["problems"] == []
    assert "recovery loses" not in running.broker.log_text()
    assert len(unread_bodies(running.broker.settings.db_path)) == 30


# --- file modes ------------------------------------------------------------------------------------


def test_existing_0644_database_wal_shm_and_backup_become_0600(short_dir: Path) -> None:
    """A 0644 v3 database with 0644 -wal and -shm: after start, all of them and the backup made
    before the upgrade are 0600, and the log says which modes were fixed."""
    db_path = short_dir / "peers.db"
    database.create(db_path, 3)
    connection = sqlite3.connect(db_path)
    database.configure(connection)
    connection.execute("INSERT INTO events (at, kind, peer_id, detail) VALUES (1, 'x', NULL, 'y')")
    connection.commit()
    os.chmod(db_path, 0o644)
    for suffix in ("-wal", "-shm"):
        os.chmod(f"{db_path}{suffix}", 0o644)
    world = Running(short_dir)
    old_umask = os.umask(0o022)
    try:
        try:
            world.start()
        finally:
            os.umask(old_umask)
            connection.close()
        world.send("hello")
        files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), db_path.with_name("peers.db.v3.bak")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert modes == {p.name: 0o600 for p in files}, modes
        assert "mode fixed" in world.broker.log_text()
    finally:
        world.close()


def test_a_new_database_and_its_wal_are_created_0600_under_a_loose_umask(short_dir: Path) -> None:
    """With umask 022 the broker creates the database, its -wal and -shm 0600."""
    world = Running(short_dir)
    old_umask = os.umask(0o022)
    try:
        try:
            world.start()
        finally:
            os.umask(old_umask)
        world.send("hello")
        db_path = world.broker.settings.db_path
        for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        world.close()
