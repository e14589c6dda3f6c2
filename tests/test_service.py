"""The broker as a real process on real sockets: files, locks, twistd, strangers, crashes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.protocols import amp

from claudepeers.common import agents

from claudepeers.wire import commands as wire

from conftest import ROOT, BrokerProcess, broker_env, wait_for_socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


async def amp_client(path: Path, locator: Any = None) -> amp.AMP:
    """A plain AMP client on the broker's UNIX socket."""
    protocol = amp.AMP(locator=locator) if locator is not None else amp.AMP()
    await connectProtocol(UNIXClientEndpoint(reactor, str(path)), protocol)
    return protocol


def test_socket_directory_and_token_modes(short_dir: Path) -> None:
    """The run directory is 0700, the socket 0600 and the TCP token file 0600."""
    broker = BrokerProcess(short_dir, broker_env(short_dir), args=["--tcp", str(free_port())]).start()
    try:
        run_dir = broker.socket_path.parent
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(broker.socket_path.stat().st_mode) == 0o600
        token = run_dir / "claude-peers.token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32
    finally:
        broker.stop()


def test_sigterm_stops_cleanly_and_removes_the_socket(short_dir: Path) -> None:
    """SIGTERM: exit status 0, socket and lock files removed, database closed (no WAL left)."""
    broker = BrokerProcess(short_dir, broker_env(short_dir)).start()
    status = broker.stop(signal.SIGTERM)
    assert status == 0, broker.log_text()
    assert not os.path.lexists(broker.socket_path)
    assert not os.path.lexists(str(broker.socket_path) + ".lock")
    assert not (short_dir / "peers.db-wal").exists()


def test_stale_socket_from_a_crash_is_replaced(short_dir: Path) -> None:
    """After kill -9 the socket and lock remain; the next broker replaces them and serves."""
    first = BrokerProcess(short_dir, broker_env(short_dir)).start()
    first.stop(signal.SIGKILL)
    assert os.path.lexists(first.socket_path) and os.path.lexists(str(first.socket_path) + ".lock")
    second = BrokerProcess(short_dir, broker_env(short_dir)).start()
    try:
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(second.socket_path))
        probe.close()
    finally:
        second.stop()


def test_second_broker_on_same_socket_refuses_clearly(broker_process: BrokerProcess) -> None:
    """A second broker exits 1 naming the broker that owns the socket; the first keeps serving."""
    result = subprocess.run(
        [sys.executable, "-m", "claudepeers.broker.main"], env=broker_process.env,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert f"another broker (pid {broker_process.process.pid})" in result.stderr
    wait_for_socket(broker_process.socket_path, broker_process.process, timeout=2)


def test_under_twistd_a_failed_start_exits_1(broker_process: BrokerProcess) -> None:
    """twistd gives a service no exit status: a broker that cannot start still exits 1
    there (a supervisor sees the failure), with its one line."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "twistd"), "--nodaemon", "--pidfile=", "claude-peers"],
        env=broker_process.env, cwd=str(broker_process.base), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"another broker (pid {broker_process.process.pid})" in result.stdout + result.stderr
    wait_for_socket(broker_process.socket_path, broker_process.process, timeout=2)


def test_second_broker_on_same_database_refuses_clearly(broker_process: BrokerProcess) -> None:
    """Another socket but the same database: refused, naming the database."""
    env = dict(broker_process.env, CLAUDE_PEERS_SOCKET=str(broker_process.base / "other" / "s.sock"))
    result = subprocess.run([sys.executable, "-m", "claudepeers.broker.main"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "database" in result.stderr and "another broker" in result.stderr


@pytest_twisted.ensureDeferred
async def test_twistd_plugin_runs_the_broker(short_dir: Path) -> None:
    """`twistd -n claude-peers` (the plugin) serves the wire and stops on SIGTERM."""
    env = broker_env(short_dir)
    sock = short_dir / "run" / "cp.sock"
    log = open(short_dir / "twistd.log", "wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "twistd"), "--nodaemon", "--pidfile=", "claude-peers", "--socket", str(sock),
         "--db", str(short_dir / "peers.db")],
        env=env, cwd=str(short_dir), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        wait_for_socket(sock, process)
        client = await amp_client(sock)
        hello = await client.callRemote(wire.Hello)
        assert hello["pid"] == process.pid
        client.transport.loseConnection()
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(15)
    # twistd re-raises the signal it stopped on after a clean shutdown (supervisors read
    # that as a normal stop); the log shows the clean stop.
    assert status in (0, -signal.SIGTERM), (short_dir / "twistd.log").read_text()
    assert "claude-peers broker stopped" in (short_dir / "twistd.log").read_text()
    assert not os.path.lexists(sock)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a client under another uid")
def test_client_of_another_uid_is_refused(broker_process: BrokerProcess) -> None:
    """Another uid is refused by SO_PEERCRED even when file modes would let it connect."""
    # Loosen the file modes on purpose: the kernel's credentials must still keep it out.
    os.chmod(broker_process.base, 0o755)
    os.chmod(broker_process.socket_path.parent, 0o755)
    os.chmod(broker_process.socket_path, 0o666)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from twisted.internet import task, defer
        from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
        from twisted.protocols import amp
        from claudepeers.wire import commands as wire
        async def main(reactor):
            p = amp.AMP()
            await connectProtocol(UNIXClientEndpoint(reactor, {str(broker_process.socket_path)!r}), p)
            try:
                await p.callRemote(wire.ListPeers, scope="machine")
                print("SERVED")
            except wire.PermissionDenied as e:
                print("REFUSED", e)
        task.react(lambda r: defer.ensureDeferred(main(r)))
    """)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=30, cwd="/",
    )
    assert "REFUSED" in result.stdout, result.stdout + result.stderr
    assert "uid 65534" in result.stdout


@pytest_twisted.ensureDeferred
async def test_tcp_client_without_token_is_refused(short_dir: Path) -> None:
    """TCP on 127.0.0.1: no command but Hello before the token; the right token opens it."""
    port = free_port()
    broker = BrokerProcess(short_dir, broker_env(short_dir), args=["--tcp", str(port)]).start()
    try:
        protocol = amp.AMP()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
        with pytest.raises(wire.AuthenticationRequired):
            await protocol.callRemote(wire.Send, to="anyone", body="hi")
        with pytest.raises(wire.PermissionDenied):
            await protocol.callRemote(wire.Authenticate, token="not-the-token")
        token = (broker.socket_path.parent / "claude-peers.token").read_text().strip()
        await protocol.callRemote(wire.Authenticate, token=token)
        assert (await protocol.callRemote(wire.ListPeers, scope="machine"))["peers"] == []
        protocol.transport.loseConnection()
    finally:
        broker.stop()


class Recorder(amp.CommandLocator):
    """A bridge stand-in that records pushes and answers them as told."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.ids: list[int] = []

    @wire.Deliver.responder
    def deliver(self, messages: list) -> dict:
        """Record the push."""
        self.ids += [message["id"] for message in messages]
        return {"shown": [self.shown] * len(messages)}


async def register_here(path: Path, locator: Any, delivery: str) -> amp.AMP:
    """Register this test process's agent session (its parent stands in) on the broker."""
    session = agents.session_of(os.getpid())
    protocol = await amp_client(path, locator)
    await protocol.callRemote(wire.Register, agent_pid=session.pid, agent_start=session.start,
                              client_type="unknown", cwd=os.getcwd(), delivery=delivery, name="target")
    return protocol


@pytest_twisted.ensureDeferred
async def test_malformed_boxes_drop_only_that_connection(broker_process: BrokerProcess) -> None:
    """Garbage framing and an oversized key cost only the sender's connection."""
    recorder = Recorder(shown=True)
    target = await register_here(broker_process.socket_path, recorder, "push")
    for garbage in (b"\xff\xff" + b"x" * 300, b"\x00\x04_ask\x00\x01" + b"\x00" * 10 + b"\x01\x00" + b"k" * 256):
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(broker_process.socket_path))
        raw.sendall(garbage)
        raw.settimeout(5)
        assert raw.recv(100) == b""  # the broker hung up on it
        raw.close()
    cli = await amp_client(broker_process.socket_path)
    sent = await cli.callRemote(wire.Send, to="target", body="still here")
    assert sent["status"] == "shown" and recorder.ids == [sent["message_id"]]
    for protocol in (cli, target):
        protocol.transport.loseConnection()


async def _stream_sends(path: Path, count: int, acked: list[int]) -> None:
    """Send ``count`` messages one after another, recording the ids the broker acknowledged."""
    try:
        cli = await amp_client(path)
        for n in range(count):
            answer = await cli.callRemote(wire.Send, to="target", body=f"message {n}")
            acked.append(answer["message_id"])
    except Exception:  # the broker was killed under us: that is the test
        return


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_stream_loses_no_acknowledged_message(short_dir: Path) -> None:
    """kill -9 during a stream of sends, restart: every acknowledged message is delivered once."""
    env = broker_env(short_dir, CLAUDE_PEERS_MESSAGES_PER_MINUTE="100000")
    broker = BrokerProcess(short_dir, env).start()
    holder = await register_here(broker.socket_path, Recorder(shown=False), "inline")
    acked: list[int] = []
    stream = Deferred.fromCoroutine(_stream_sends(broker.socket_path, 100_000, acked))
    while len(acked) < 300:
        await Deferred.fromCoroutine(_tick())
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait(10)
    broker.process = None
    await stream
    assert holder.transport is None or holder.transport.disconnecting or True  # lost with the broker
    broker.start()
    try:
        recorder = Recorder(shown=True)
        again = await register_here(broker.socket_path, recorder, "push")
        while len(recorder.ids) < len(acked):
            await Deferred.fromCoroutine(_tick())
        for _ in range(500):  # acknowledgements of shown pushes commit in the background
            unread = await again.callRemote(wire.FetchUnread, limit=1000)
            if not unread["messages"]:
                break
            await Deferred.fromCoroutine(_tick())
        assert unread["messages"] == []
        assert set(acked) <= set(recorder.ids), "an acknowledged message was lost"
        assert len(recorder.ids) == len(set(recorder.ids)), "a message was pushed twice"
        assert recorder.ids == sorted(recorder.ids), "order broken"
        again.transport.loseConnection()
    finally:
        broker.stop()


async def _tick() -> None:
    d: Deferred = Deferred()
    reactor.callLater(0.01, d.callback, None)
    await d


def test_silent_tcp_client_is_dropped_after_a_missed_ping(short_dir: Path) -> None:
    """TCP has no kernel liveness signal: a client that stops answering pings is dropped."""
    port = free_port()
    env = broker_env(short_dir, CLAUDE_PEERS_TCP_PING_SECONDS="0.2")
    broker = BrokerProcess(short_dir, env, args=["--tcp", str(port)]).start()
    try:
        token = (broker.socket_path.parent / "claude-peers.token").read_text().strip()
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(amp.AmpBox({b"_command": b"Authenticate", b"_ask": b"1", b"token": token.encode()}).serialize())
        raw.settimeout(10)
        received = b""
        while True:  # read the answer and the pings, answer none of them
            try:
                chunk = raw.recv(4096)
            except ConnectionResetError:  # the broker aborted the connection
                break
            if not chunk:
                break
            received += chunk
        raw.close()
        assert b"_answer" in received and b"Ping" in received
    finally:
        broker.stop()
