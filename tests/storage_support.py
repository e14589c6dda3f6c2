"""What the storage tests share (``test_storage*.py``, ``test_faults_refused.py``): records to
store, the database and Store fixtures, file fingerprints, a query on a separate connection,
a child that runs ``prepare``, and another process holding a real SQLite lock.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted

from claudepeers.broker.records import ONLINE, NewMessage, PeerRecord
from claudepeers.broker.storage import Store, database, open_pool, prepare


ROOT = Path(__file__).resolve().parent.parent


def fingerprint(path: Path) -> str:
    """A digest of the file's bytes, to prove it was left untouched."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_message(to_id: str, body: str = "hello", from_id: str = "sender01", sent_at: float = 1000.0) -> NewMessage:
    """A message ready to store."""
    return NewMessage(from_id=from_id, from_name="sender", from_summary="testing", from_cwd="/repo",
                      from_client="claude-code", verified=True, to_id=to_id, body=body, sent_at=sent_at)


def peer(peer_id: str, state: str = ONLINE, gone_at: float | None = None, name: str | None = None) -> PeerRecord:
    """A peer record with plausible fields."""
    return PeerRecord(id=peer_id, host="host-a", agent_pid=4242, agent_start=100.0, client_type="claude-code",
                      name=name or peer_id, cwd="/repo", git_root="/repo", git_common_dir="/repo/.git",
                      branch="main", tty=None, summary="", state=state, registered_at=100.0, last_seen=200.0,
                      gone_at=gone_at)


def query(path: Path, sql: str) -> list[tuple]:
    """Run ``sql`` on a separate connection."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's database lives (not yet created)."""
    return tmp_path / "peers.db"


@pytest.fixture
def target(db_target: str) -> str:
    """The test's database on each engine in turn: a SQLite path, then a PostgreSQL DSN."""
    return db_target


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    """A Store on a freshly prepared database (each engine in turn), closed afterwards."""
    prepare(target)
    the_store = Store(open_pool(target))
    try:
        yield the_store
    finally:
        pytest_twisted.blockon(the_store.close())


CHILD_PREPARE = textwrap.dedent(
    """
    import json, os, sys
    from claudepeers.broker.storage import DatabaseError, prepare
    path, guarded = sys.argv[1], sys.argv[2]
    result = {"writable": os.access(guarded, os.W_OK)}
    try:
        result["version"] = prepare(path)
    except DatabaseError as exc:
        result["error"] = str(exc)
    print(json.dumps(result))
    """
)


HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    connection.execute("ROLLBACK")
    connection.close()
    """
)


class LockHolder:
    """Another process holding ``BEGIN EXCLUSIVE`` on a database until released."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "locked", f"lock holder did not start: {line!r}"

    def release(self) -> None:
        """Roll back and let the child exit."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("release\n")
            self.process.stdin.flush()
            self.process.wait(timeout=10)


@pytest.fixture
def lock_holder() -> Iterator[list[LockHolder]]:
    """Start lock holders with ``holders.append(LockHolder(path))``; all are released after the test."""
    holders: list[LockHolder] = []
    try:
        yield holders
    finally:
        for holder in holders:
            holder.release()
            if holder.process.poll() is None:
                holder.process.kill()


def make_wal(path: Path) -> None:
    """Switch a database to WAL, as the broker's connection does."""
    connection = sqlite3.connect(path)
    database.configure(connection)
    connection.close()
