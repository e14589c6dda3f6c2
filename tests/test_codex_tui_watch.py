"""Which Codex TUI shows a thread, and the thread's peer ending when that TUI exits.

A stand-in ``codex app-server`` control socket (JSON-RPC in WebSocket messages on a UNIX
socket, as Codex 0.169/0.171 speak it; wsproto serves the WebSocket side) answers
``mcpServerStatus/list`` with the address of the thread's ``codex_tui`` server; real child
processes play the TUIs (one listens on that port); the watch runs on the real reactor
with the real exit watch.
"""

from __future__ import annotations

import json
import os
import socket
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
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from claudepeers.bridge import codexdaemon, codexproc
from claudepeers.bridge.codexwatch import TuiWatch
from claudepeers.bridge.wake import Waker
from claudepeers.common.agents import AgentProcess

THREAD = "01a2354c-a336-7c73-8d2c-768cad82fcee"


class StandInDaemon:
    """A control socket that answers like the Codex daemon: ``origins`` maps thread -> httpOrigin."""

    def __init__(self, home: Path, origins: dict[str, str | None]) -> None:
        self.origins = origins
        self.methods: list[str] = []
        self.pongs: list[bytes] = []
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
                except OSError:
                    pass  # the client went mid-answer (as after a message too long)

    def _session(self, conn: socket.socket) -> None:
        """One client connection, driven by wsproto's server side until the client goes."""
        ws = WSConnection(ConnectionType.SERVER)
        text: list[str] = []
        while True:
            data = conn.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    conn.sendall(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    conn.sendall(ws.send(event.response()))
                    return
                elif isinstance(event, Pong):
                    self.pongs.append(event.payload)
                elif isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        self._message(conn, ws, json.loads("".join(text)))
                        text.clear()

    def _message(self, conn: socket.socket, ws: WSConnection, message: dict[str, Any]) -> None:
        self.methods.append(message["method"])
        if "id" not in message:
            return
        if message["method"] == "initialize":
            conn.sendall(ws.send(Ping(b"stand-in")))  # the client must answer it and read on
        # A notification first, as the real daemon sends (configWarning and the like).
        conn.sendall(ws.send(TextMessage(data=json.dumps({"method": "configWarning", "params": {"summary": "x"}}))))
        # The answer in two fragments: the client joins them.
        answer = json.dumps(self._answer(message))
        half = len(answer) // 2
        conn.sendall(ws.send(TextMessage(data=answer[:half], message_finished=False))
                     + ws.send(TextMessage(data=answer[half:], message_finished=True)))

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        if message["method"] == "initialize":
            return {"id": message["id"], "result": {"userAgent": "stand-in", "codexHome": "/x"}}
        thread = message["params"].get("threadId")
        if thread not in self.origins:
            return {"id": message["id"], "error": {"code": -32600, "message": f"thread not found: {thread}"}}
        server = {"name": "codex_tui", "httpOrigin": self.origins[thread], "runtimeStatus": "connected"}
        return {"id": message["id"], "result": {"data": [server], "nextCursor": None}}


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
    assert daemon.pongs == [b"stand-in"]  # its ping was answered, and the fragmented answers joined
    with pytest.raises(codexdaemon.DaemonError, match="thread not found"):
        codexdaemon.thread_tui_port(str(short_dir), "01a2354c-0000-7000-8000-000000000000")
    with pytest.raises(codexdaemon.DaemonError, match="cannot reach"):
        codexdaemon.thread_tui_port(str(short_dir / "elsewhere"), THREAD)


def test_an_answer_longer_than_the_bound_is_an_error_and_the_next_question_is_answered(
        daemon: StandInDaemon, short_dir: Path) -> None:
    """A message past MAX_MESSAGE is not read to its end: a DaemonError; the daemon's next
    connection is served as usual."""
    daemon.origins[THREAD] = "http://127.0.0.1:43617/" + "x" * codexdaemon.MAX_MESSAGE
    with pytest.raises(codexdaemon.DaemonError, match="a message of more than 4194304 characters"):
        codexdaemon.thread_tui_port(str(short_dir), THREAD)
    daemon.origins[THREAD] = "http://127.0.0.1:43617"
    assert codexdaemon.thread_tui_port(str(short_dir), THREAD) == 43617


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

