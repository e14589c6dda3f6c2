"""The platform layer: credentials, exit watchers, socket path limits, and the choice between them.

The macOS readers run here on bytes laid out as xnu's ``<sys/ucred.h>`` and ``<sys/un.h>``
define them (a little-endian Mac: arm64 and x86_64 alike); only the getsockopt call
itself needs a Mac.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from claudepeers.common import platforms
from claudepeers.common.platforms import credentials, exitwatch, paths, processes
from claudepeers.broker.protocol import peer_credentials
from claudepeers.broker.records import Credentials
from claudepeers.common.settings import SettingError, Settings

# struct xucred for uid 501 with 16 groups (staff, everyone, ...): cr_version 0, cr_uid 501,
# cr_ngroups 16, two bytes of padding, then cr_groups[16], all little-endian.
XUCRED_501 = bytes.fromhex(
    "00000000" "f5010000" "1000" "0000"
    "14000000" "0c000000" "3d000000" "4f000000" "50000000" "51000000" "62000000" "21000000"
    "64000000" "cc000000" "fa000000" "8b010000" "8e010000" "8f010000" "90010000" "bd020000"
)
PID_4242 = bytes.fromhex("92100000")  # pid_t 4242


class RecordedSocket:
    """A socket whose getsockopt answers from recorded bytes, checking level and buffer size."""

    def __init__(self, answers: dict[tuple[int, int], bytes | OSError]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        """The recorded answer for (level, option), or its recorded error."""
        self.asked.append((level, option, size))
        answer = self.answers[(level, option)]
        if isinstance(answer, OSError):
            raise answer
        assert size >= len(answer)
        return answer


def test_the_recorded_layouts_match_the_darwin_headers() -> None:
    """xucred is 76 bytes (u_int, uid_t, short + padding, gid_t[16]); the options are 0x001-0x003 at level 0."""
    assert credentials.XUCRED.size == len(XUCRED_501) == 76
    assert (credentials.SOL_LOCAL, credentials.LOCAL_PEERCRED, credentials.LOCAL_PEERPID,
            credentials.LOCAL_PEEREPID) == (0, 1, 2, 3)


def test_macos_credentials_come_from_xucred_and_peerpid() -> None:
    """LOCAL_PEERCRED gives the uid, LOCAL_PEERPID the pid, both at level SOL_LOCAL."""
    sock = RecordedSocket({(0, 1): XUCRED_501, (0, 2): PID_4242})
    assert credentials.darwin_peer(sock) == (4242, 501)
    assert sock.asked == [(0, 1, 76), (0, 2, 4)]


def test_macos_falls_back_to_the_effective_pid() -> None:
    """When LOCAL_PEERPID is refused, LOCAL_PEEREPID names the pid."""
    sock = RecordedSocket({(0, 1): XUCRED_501, (0, 2): OSError(22, "Invalid argument"), (0, 3): PID_4242})
    assert credentials.darwin_peer(sock) == (4242, 501)


@pytest.mark.parametrize(
    "raw, why",
    [
        (XUCRED_501[:40], "answered 40 bytes"),
        (b"\x01\x00\x00\x00" + XUCRED_501[4:], "xucred version 1"),
    ],
)
def test_a_malformed_xucred_is_an_error_not_a_uid(raw: bytes, why: str) -> None:
    """A short answer or another structure version is refused (the connection then is too)."""
    with pytest.raises(OSError, match=why):
        credentials.darwin_peer(RecordedSocket({(0, 1): raw, (0, 2): PID_4242}))


def test_this_kernels_credentials_of_a_real_socket_pair_name_this_process() -> None:
    """The platform's reader (SO_PEERCRED here, LOCAL_PEERCRED on the macOS runner) names us."""
    left, right = socket.socketpair(socket.AF_UNIX)
    try:
        assert platforms.peer_credentials(left) == (os.getpid(), os.getuid())
    finally:
        left.close()
        right.close()


def test_the_broker_reads_credentials_through_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """protocol.peer_credentials uses the platform's reader; a reader that fails leaves no uid."""

    class Transport:
        def getHandle(self) -> Any:  # noqa: N802 - Twisted's name
            return handle

    handle = RecordedSocket({(0, 1): XUCRED_501, (0, 2): PID_4242})
    handle.family = socket.AF_UNIX  # type: ignore[attr-defined]
    monkeypatch.setattr(platforms, "peer_credentials", credentials.darwin_peer)
    # The start time read at accept (issue 11) is not this test's business: pid 4242 is made up.
    monkeypatch.setattr("claudepeers.broker.credentials.connecting_process_start", lambda handle, pid: (None, False))
    assert peer_credentials(Transport()) == Credentials("unix", pid=4242, uid=501)
    monkeypatch.setattr(platforms, "peer_credentials", credentials.unsupported_peer)
    assert peer_credentials(Transport()) == Credentials("unix")


def test_without_proc_liveness_asks_psutil_and_a_live_process_stays_alive() -> None:
    """A missing /proc (macOS) chooses psutil, never "every process is dead"."""
    check = processes.chosen(portable=False, have_proc=False)
    assert check is processes.is_alive_portable
    assert check(os.getpid(), psutil.Process().create_time())
    assert processes.chosen(portable=True, have_proc=True) is processes.is_alive_portable
    assert processes.chosen(portable=False, have_proc=True) is processes.is_alive_proc


def test_the_portable_setting_is_read_at_import() -> None:
    """CLAUDE_PEERS_PORTABLE=1 in the environment selects the psutil paths."""
    code = "import claudepeers.common.platforms as p; print(p.PORTABLE, p.is_alive.__name__)"
    env = {**os.environ, "CLAUDE_PEERS_PORTABLE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "is_alive_portable"]


# --- socket paths ------------------------------------------------------------------------


def test_socket_path_limits_per_platform() -> None:
    """sun_path is 108 bytes on Linux and 104 on macOS, the final NUL included."""
    assert paths.socket_path_limit("linux") == 107
    assert paths.socket_path_limit("darwin") == 103
    with pytest.raises(ValueError, match=r"is 104 bytes long; macOS allows at most 103 bytes"):
        paths.check_socket_path("/" + "s" * 103, 103, "darwin", "CLAUDE_PEERS_SOCKET")
    paths.check_socket_path("/" + "s" * 102, 103, "darwin", "CLAUDE_PEERS_SOCKET")


def test_a_path_at_the_limit_binds_here(short_dir: Path) -> None:
    """The limit is usable: a socket path of exactly this platform's limit binds."""
    stem = str(short_dir) + "/"
    path = stem + "s" * (platforms.SOCKET_PATH_LIMIT - len(stem))
    platforms.check_socket_path(path)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
    finally:
        sock.close()


def test_a_too_long_socket_setting_is_a_clear_error(short_dir: Path) -> None:
    """CLAUDE_PEERS_SOCKET longer than the limit: a SettingError naming it and the limit."""
    long_path = str(short_dir / ("d" * 60) / ("s" * 60))
    with pytest.raises(SettingError, match=rf"CLAUDE_PEERS_SOCKET .* allows at most {platforms.SOCKET_PATH_LIMIT} bytes"):
        Settings.from_env({"HOME": str(short_dir), "CLAUDE_PEERS_SOCKET": long_path})
    with pytest.raises(SettingError, match=r"under HOME \(set CLAUDE_PEERS_SOCKET\)"):
        Settings.from_env({"HOME": str(short_dir / ("h" * 100))})


# --- waiting for the agent's exit --------------------------------------------------------


@pytest.fixture
def child() -> Any:
    """A sleeping child process, killed and reaped afterwards."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def _start(pid: int) -> float:
    return psutil.Process(pid).create_time()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux only")
def test_a_pidfd_turns_readable_when_the_agent_ends(child: subprocess.Popen) -> None:
    """Linux: the watcher reads the pidfd and reports the end once, then stops watching."""
    reactor = MemoryReactorClock()
    ended: list[int] = []
    watcher = exitwatch.watch_pidfd(reactor, child.pid, _start(child.pid), lambda: ended.append(1), processes.is_alive_proc)
    assert watcher in reactor.getReaders()
    fd = watcher.fileno()
    child.kill()
    assert select.select([fd], [], [], 5.0)[0] == [fd]
    watcher.doRead()
    watcher.doRead()
    assert ended == [1] and watcher not in reactor.getReaders()


class FakeKqueueApi:
    """What watch_kqueue uses of the select module on macOS, recording the registration."""

    KQ_FILTER_PROC = -5
    KQ_EV_ADD = 0x1
    KQ_EV_ONESHOT = 0x10
    KQ_NOTE_EXIT = 0x80000000

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone
        self.registered: list[dict[str, int]] = []
        self.pending: list[Any] = []
        self.closed = False

    def kevent(self, ident: int, filter: int, flags: int, fflags: int) -> dict[str, int]:  # noqa: A002
        """A change record like select.kevent."""
        return {"ident": ident, "filter": filter, "flags": flags, "fflags": fflags}

    def kqueue(self) -> "FakeKqueueApi":
        """One queue (this object)."""
        return self

    def control(self, changes: list | None, max_events: int, timeout: float) -> list:
        """Register changes (ESRCH for a gone process) or hand out pending events."""
        if changes:
            if self.gone:
                raise ProcessLookupError(3, "No such process")
            self.registered += changes
            return []
        events, self.pending = self.pending, []
        return events

    def fileno(self) -> int:
        """A descriptor number for the reactor."""
        return 99

    def close(self) -> None:
        """Close the queue."""
        self.closed = True


def test_kqueue_registers_note_exit_for_the_pid_and_reports_it(child: subprocess.Popen) -> None:
    """macOS: EVFILT_PROC/NOTE_EXIT, one-shot, on the agent's pid; its event ends the watch."""
    api, reactor, ended = FakeKqueueApi(), MemoryReactorClock(), []
    watcher = exitwatch.watch_kqueue(reactor, child.pid, _start(child.pid), lambda: ended.append(1),
                                     processes.is_alive_portable, api=api)
    assert api.registered == [{"ident": child.pid, "filter": -5, "flags": 0x11, "fflags": 0x80000000}]
    assert watcher in reactor.getReaders()
    watcher.doRead()  # readable without an exit event: keep watching
    assert ended == [] and watcher in reactor.getReaders()
    api.pending = [type("kevent", (), {"fflags": api.KQ_NOTE_EXIT})()]
    watcher.doRead()
    assert ended == [1] and api.closed and watcher not in reactor.getReaders()


@pytest.mark.parametrize("kind", [
    pytest.param("pidfd", marks=pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux only")),
    "kqueue", "kqueue-esrch", "poll",
])
def test_an_agent_already_gone_is_reported_at_once(kind: str) -> None:
    """Every watcher reports a process that ended before it was armed, without waiting."""
    gone = subprocess.Popen(["true"])
    start = _start(gone.pid) if psutil.pid_exists(gone.pid) else 0.0
    gone.wait()
    reactor, ended = MemoryReactorClock(), []
    if kind == "pidfd":
        exitwatch.watch_pidfd(reactor, gone.pid, start, lambda: ended.append(1), processes.is_alive_proc)
    elif kind.startswith("kqueue"):
        api = FakeKqueueApi(gone=kind == "kqueue-esrch")
        exitwatch.watch_kqueue(reactor, gone.pid, start, lambda: ended.append(1), processes.is_alive_portable, api=api)
    else:
        exitwatch.watch_poll(reactor, gone.pid, start, lambda: ended.append(1), processes.is_alive_portable)
    reactor.advance(0)
    assert ended == [1] and reactor.getReaders() == []


def test_the_poll_notices_an_end_within_a_second(child: subprocess.Popen) -> None:
    """The last resort checks pid and start time each POLL_SECONDS on the injected clock."""
    clock, ended = Clock(), []
    exitwatch.watch_poll(clock, child.pid, _start(child.pid), lambda: ended.append(1), processes.is_alive_portable)
    clock.advance(exitwatch.POLL_SECONDS)
    assert ended == []
    child.kill()
    child.wait()
    clock.advance(exitwatch.POLL_SECONDS)
    assert ended == [1]


@pytest.mark.skipif(not hasattr(os, "pidfd_open") or hasattr(select, "kqueue"), reason="Linux's choice of watchers")
def test_portable_watching_skips_the_pidfd(child: subprocess.Popen) -> None:
    """With the portable paths forced on Linux (no kqueue), the watch is the psutil poll."""
    reactor = MemoryReactorClock()
    watcher = exitwatch.watch_exit(reactor, child.pid, _start(child.pid), lambda: None,
                                   processes.is_alive_portable, portable=True)
    assert reactor.getReaders() == [] and watcher.running
    watcher.stop()
    fast = exitwatch.watch_exit(reactor, child.pid, _start(child.pid), lambda: None, processes.is_alive_proc)
    assert reactor.getReaders() == [fast]
    fast.stop()


@pytest.mark.skipif(not hasattr(select, "kqueue"), reason="kqueue is macOS/BSD only (runs on the macOS CI runner)")
def test_a_real_kqueue_reports_the_agents_end(child: subprocess.Popen) -> None:
    """macOS: the kernel's NOTE_EXIT makes the kqueue readable; the watcher reports the end once."""
    reactor, ended = MemoryReactorClock(), []
    watcher = exitwatch.watch_kqueue(reactor, child.pid, _start(child.pid), lambda: ended.append(1),
                                     processes.is_alive_portable)
    assert watcher in reactor.getReaders()
    fd = watcher.fileno()
    child.kill()
    assert select.select([fd], [], [], 5.0)[0] == [fd]
    watcher.doRead()
    assert ended == [1] and watcher not in reactor.getReaders()


def test_the_peer_pidfd_is_asked_for_only_on_linux() -> None:
    """SO_PEERPIDFD's number means something else elsewhere: only Linux's reader asks the kernel."""
    from claudepeers.common.platforms import credentials as platform_credentials

    class Socket:
        asked: list[tuple[int, int]] = []

        def getsockopt(self, level: int, option: int) -> int:
            self.asked.append((level, option))
            raise OSError(92, "Protocol not available")  # a kernel before 6.5

    sock = Socket()
    assert platform_credentials.pidfd_reader_for("darwin")(sock) is None and sock.asked == []
    assert platform_credentials.pidfd_reader_for("linux")(sock) is None
    assert sock.asked == [(socket.SOL_SOCKET, platform_credentials.SO_PEERPIDFD)]


@pytest.mark.parametrize("portable", [False, True])
def test_send_signal_reaches_only_the_process_that_started_at_the_given_time(portable: bool) -> None:
    """A start time that is not the process's (a reused pid) gets no signal; the right one
    does; a pid that has ended answers False (the pidfd path, then psutil's)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = psutil.Process(process.pid).create_time()
        assert not processes.send_signal(process.pid, start - 5.0, 15, portable=portable)
        assert process.poll() is None
        assert processes.send_signal(process.pid, start, 15, portable=portable)
        assert process.wait(10) == -15
        assert not processes.send_signal(process.pid, start, 15, portable=portable)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
