"""Which Codex TUI shows a thread, and the thread's peer ending when that TUI exits.

A stand-in ``codex app-server`` control socket (JSON-RPC in WebSocket frames on a UNIX
socket, as Codex 0.169/0.171 speak it) answers ``mcpServerStatus/list`` with the address
of the thread's ``codex_tui`` server; real child processes play the TUIs (one listens on
that port); the watch runs on the real reactor with the real exit watch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from claudepeers.bridge import codexdaemon, codexproc
from claudepeers.bridge.codexwatch import TuiWatch
from claudepeers.bridge.wake import Waker
from claudepeers.common.agents import AgentProcess

THREAD = "01a2354c-a336-7c73-8d2c-768cad82fcee"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StandInDaemon:
    """A control socket that answers like the Codex daemon: ``origins`` maps thread -> httpOrigin."""

    def __init__(self, home: Path, origins: dict[str, str | None]) -> None:
        self.origins = origins
        self.methods: list[str] = []
        path = self.path = Path(codexdaemon.control_socket(str(home)))
        path.parent.mkdir(parents=True)
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening (shutdown first: a close alone leaves the blocked accept() serving)."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except (OSError, EOFError):
                    pass

    @staticmethod
    def _recv(conn: socket.socket, count: int, buffer: bytearray) -> bytes:
        while len(buffer) < count:
            data = conn.recv(65536)
            if not data:
                raise EOFError
            buffer += data
        out = bytes(buffer[:count])
        del buffer[:count]
        return out

    def _session(self, conn: socket.socket) -> None:
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += conn.recv(4096)
        head, rest = bytes(buffer).split(b"\r\n\r\n", 1)
        buffer = bytearray(rest)
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            first, second = self._recv(conn, 2, buffer)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._recv(conn, 2, buffer))[0]
            mask = self._recv(conn, 4, buffer)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv(conn, length, buffer)))
            message = json.loads(payload)
            self.methods.append(message["method"])
            if "id" not in message:
                continue
            # A notification first, as the real daemon sends (configWarning and the like).
            self._send(conn, {"method": "configWarning", "params": {"summary": "x"}})
            self._send(conn, self._answer(message))

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        if message["method"] == "initialize":
            return {"id": message["id"], "result": {"userAgent": "stand-in", "codexHome": "/x"}}
        thread = message["params"].get("threadId")
        if thread not in self.origins:
            return {"id": message["id"], "error": {"code": -32600, "message": f"thread not found: {thread}"}}
        server = {"name": "codex_tui", "httpOrigin": self.origins[thread], "runtimeStatus": "connected"}
        return {"id": message["id"], "result": {"data": [server], "nextCursor": None}}

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        head = struct.pack("!BB", 0x81, len(data)) if len(data) < 126 else struct.pack("!BBH", 0x81, 126, len(data))
        conn.sendall(head + data)


class Tui:
    """A child process standing in for one TUI: it listens on a localhost port, like Codex's TUI."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import socket,sys,time\ns=socket.socket();s.bind(('127.0.0.1',0));s.listen()\n"
             "print(s.getsockname()[1],flush=True)\ntime.sleep(60)"],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.key = (self.process.pid, psutil.Process(self.process.pid).create_time())

    def exit(self) -> None:
        """The person quits this TUI."""
        self.process.kill()
        self.process.wait()


@pytest.fixture
def tuis() -> Iterator[list[Tui]]:
    """Two stand-in TUIs, ended by pid afterwards."""
    started = [Tui(), Tui()]
    yield started
    for tui in started:
        if tui.process.poll() is None:
            tui.exit()


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[StandInDaemon]:
    """The stand-in daemon of CODEX_HOME ``short_dir``."""
    served = StandInDaemon(short_dir, {})
    yield served
    served.close()


APP_SERVER = AgentProcess(1, 1.0, "codex", ("/h/.codex/packages/app-server-daemon/x/codex", "app-server"))


def test_the_daemon_names_the_port_of_the_thread_tui_and_an_unknown_thread_is_an_error(
        daemon: StandInDaemon, short_dir: Path) -> None:
    """mcpServerStatus/list answers the codex_tui origin; a thread it does not know, or no
    daemon at all, is a DaemonError (never read as "the person left")."""
    daemon.origins[THREAD] = "http://127.0.0.1:43617"
    assert codexdaemon.thread_tui_port(str(short_dir), THREAD) == 43617
    assert daemon.methods[:3] == ["initialize", "initialized", "mcpServerStatus/list"]
    with pytest.raises(codexdaemon.DaemonError, match="thread not found"):
        codexdaemon.thread_tui_port(str(short_dir), "01a2354c-0000-7000-8000-000000000000")
    with pytest.raises(codexdaemon.DaemonError, match="cannot reach"):
        codexdaemon.thread_tui_port(str(short_dir / "elsewhere"), THREAD)


def test_of_the_tuis_of_a_home_the_one_listening_on_the_thread_port_shows_the_thread(
        daemon: StandInDaemon, short_dir: Path, tuis: list[Tui]) -> None:
    """Two TUIs: the thread's is the one on its port (exact); once it exits, none (exact: left)."""
    daemon.origins[THREAD] = f"http://127.0.0.1:{tuis[1].port}"
    everyone = (tuis[0].key, tuis[1].key)
    assert codexproc.thread_tuis(APP_SERVER, str(short_dir), THREAD, everyone) == ((tuis[1].key,), True)
    tuis[1].exit()
    assert codexproc.thread_tuis(APP_SERVER, str(short_dir), THREAD, everyone) == ((), True)
    daemon.close()  # no daemon to ask: every TUI of the home may show it, as before
    assert codexproc.thread_tuis(APP_SERVER, str(short_dir), THREAD, everyone) == (everyone, False)


def host(tuis: tuple[tuple[int, float], ...], exact: bool = True) -> codexproc.CodexHost:
    """A CodexHost naming these TUIs."""
    return codexproc.CodexHost("/bin/codex", {}, tuis, exact)


def settled(d: Deferred, timeout: float = 10.0) -> Deferred:
    """``d`` with a deadline (the test fails rather than hangs)."""
    return d.addTimeout(timeout, reactor)


@pytest_twisted.ensureDeferred
async def test_when_the_thread_tui_exits_the_peer_ends_and_nothing_is_queued(tuis: list[Tui]) -> None:
    """The watched TUI exits, no other TUI shows the thread: on_left runs once, the Waker
    answers held (False) without running codex queue."""
    left: Deferred = Deferred()
    lookups: list[str] = []

    def lookup(agent: AgentProcess, thread: str) -> codexproc.CodexHost:
        lookups.append(thread)
        return host(())  # the daemon still names the old port; nothing listens there

    watch = TuiWatch(reactor, deferToThread, APP_SERVER, THREAD, host((tuis[0].key,)),
                     lambda: left.callback(None), lookup=lookup)
    queued: list[str] = []
    waker = Waker(reactor, lambda text: (queued.append(text), Deferred())[1], watch.present)
    watch.start()
    assert watch.present()
    tuis[0].exit()
    await settled(left)
    assert lookups == [THREAD] and watch.left and not watch.present()
    answer = waker.wake({"id": 7, "from_id": "a", "from_name": "alice", "body": "hi"})
    assert await settled(answer) is False and queued == []


@pytest_twisted.ensureDeferred
async def test_a_thread_resumed_in_another_tui_is_followed_there(tuis: list[Tui]) -> None:
    """The first TUI exits after another resumed the thread: the watch follows the second,
    and the peer ends only when that one exits too."""
    left: Deferred = Deferred()
    answers = [host((tuis[1].key,)), host(())]
    watch = TuiWatch(reactor, deferToThread, APP_SERVER, THREAD, host((tuis[0].key,)),
                     lambda: left.callback(None), lookup=lambda agent, thread: answers.pop(0))
    rechecked: Deferred = Deferred()
    recheck = watch._rechecked

    def spy(found: codexproc.CodexHost | None) -> None:
        recheck(found)
        if not rechecked.called:
            rechecked.callback(None)

    watch._rechecked = spy  # type: ignore[method-assign] - to know when the re-check ran
    watch.start()
    tuis[0].exit()
    await settled(rechecked)
    assert watch.host.tuis == (tuis[1].key,) and not left.called and watch.present()
    tuis[1].exit()
    await settled(left)
    assert not watch.present()


def test_a_watch_that_does_not_know_the_thread_tui_never_ends_the_peer() -> None:
    """Not exact (old Codex, daemon unreachable) or not a shared app-server: nothing to follow."""
    called: list[bool] = []
    me = (os.getpid(), psutil.Process().create_time())
    inexact = TuiWatch(reactor, deferToThread, APP_SERVER, THREAD, host((me,), exact=False), lambda: called.append(True))
    inexact.start()
    no_daemon = TuiWatch(reactor, deferToThread, AgentProcess(1, 1.0, "codex", ("/bin/codex", "--no-daemon")),
                         THREAD, host((me,)), lambda: called.append(True))
    no_daemon.start()
    assert not inexact.follows and not no_daemon.follows and called == []
    assert inexact.present() and no_daemon.present()

