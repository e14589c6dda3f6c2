"""A real broker on a small tmpfs (issue 11, items 8 and 9): the size bound holds the
database under the disk's size, and a full disk is one log line per episode.

Mounting needs root (``mount -t tmpfs``); without it these tests skip and say so. Every
mount is unmounted and every process ended by pid.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from claudepeers.wire import commands as wire

from raw_amp import RemoteError
from test_storage_hostile import Running

pytestmark = pytest.mark.slow


def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` for the test; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (run the slow suite as root, or in a container)")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_disk(short_dir: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs."""
    yield from mounted_tmpfs(short_dir / "disk", "3m")


@pytest.fixture
def disk_16m(short_dir: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: room for a 4 MiB bound plus SQLite's WAL (up to 1000 pages between checkpoints)."""
    yield from mounted_tmpfs(short_dir / "disk", "16m")


def on_disk(short_dir: Path, disk: Path, **env: str) -> Running:
    """A broker (not started yet) whose database lives on ``disk``, with generous rate limits."""
    return Running(short_dir, CLAUDE_PEERS_DB=str(disk / "peers.db"), CLAUDE_PEERS_MESSAGES_PER_MINUTE="1000000",
                   CLAUDE_PEERS_MAX_UNREAD="1000000", **env)


def fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_size_bound_keeps_a_reading_peer_going_on_a_small_disk(short_dir: Path, disk_16m: Path) -> None:
    """16 MiB disk, 4 MiB bound: 1,000 sends of 30 kB (30 MB, twice the disk) to a peer that reads
    them go through or are refused LimitExceeded naming max_db_bytes while read mail is purged;
    none fails for a full disk (the issue saw every send fail once the disk filled)."""
    small_disk = disk_16m
    world = on_disk(short_dir, small_disk, CLAUDE_PEERS_MAX_DB_BYTES=str(4 * 1024 * 1024))
    try:
        world.start()
        outcomes = {"stored": 0, "limit": 0}
        for number in range(1000):
            answer = world.send(f"{number:03d}" + "b" * 30_000)
            if isinstance(answer, RemoteError):
                assert answer.code == "LIMIT_EXCEEDED" and "max_db_bytes" in answer.description, answer
                outcomes["limit"] += 1
                continue
            outcomes["stored"] += 1
            assert world.bob is not None
            page = world.bob.call(wire.FetchUnread, limit=10)
            ids = [m["id"] for m in page["messages"]]
            if ids:
                world.bob.call(wire.Acknowledge, message_ids=ids)
        assert outcomes["stored"] >= 800, outcomes
        storage = world.status()["storage"]
        assert storage["ok"] and storage["purged_for_bound"] > 50, storage
        assert (small_disk / "peers.db").stat().st_size < 5 * 1024 * 1024
    finally:
        world.close()


def test_a_full_disk_is_one_log_line_and_one_when_it_clears(short_dir: Path, small_disk: Path) -> None:
    """Disk filled under a running broker: 200 sends fail BrokerUnavailable naming the full disk,
    the log gets one line for the episode (the issue saw ~1,900 tracebacks) and one when space
    returns, after which sends are stored again."""
    world = on_disk(short_dir, small_disk)
    try:
        world.start()
        assert isinstance(world.send("before"), dict)
        fill(small_disk / "filler")
        failed = [world.send(f"{n:03d}" + "f" * 30_000) for n in range(200)]
        assert all(isinstance(a, RemoteError) and a.code == "BROKER_UNAVAILABLE" and "full" in a.description
                   for a in failed), failed[:3]
        assert world.status()["storage"]["writes_failing"], "status says writes are failing"
        (small_disk / "filler").unlink()
        assert isinstance(world.send("after"), dict)
        log = world.broker.log_text()
        assert log.count("database writes are failing") <= 2, log[-3000:]
        assert log.count("succeed again after") == 1, [line for line in log.splitlines() if "database" in line]
        assert log.count("Traceback") == 0, log[-3000:]
    finally:
        world.close()
