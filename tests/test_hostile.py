"""A hostile local user against a real broker (issue 11): endless boxes and idle connections
before the token, descriptor exhaustion, TCP clients posing as kernel-verified peers, a
shared socket directory, the run directory removed under a running broker.

Every broker here is a real subprocess on real sockets; every process started is ended
by its pid. The counts tried are in docs/reliability.md, "Hostile local user".
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from claudepeers.wire import commands as wire

from conftest import ROOT, BrokerProcess, broker_env, wait_for_socket
from hostile_support import (
    AGENT_A, BRIDGE_OF_A, PID_REUSE_DRIVER, cli_status, endless_box, free_port, hung_up, rss_mib,
)
from raw_amp import Closed, RawAMP, RemoteError


@pytest.fixture
def tcp_broker(short_dir: Path) -> Iterator[tuple[BrokerProcess, int]]:
    """A broker with TCP (and its token written) on a free port."""
    port = free_port()
    broker = BrokerProcess(short_dir, broker_env(short_dir), args=["--tcp", str(port)]).start()
    try:
        yield broker, port
    finally:
        broker.stop()


# --- 1. memory before the token ------------------------------------------------------------------


def test_an_endless_box_before_the_token_is_dropped_at_its_bound(tcp_broker: tuple[BrokerProcess, int]) -> None:
    """64 MB of one box before Authenticate: the broker hangs up early and barely grows."""
    broker, port = tcp_broker
    before = rss_mib(broker.process.pid)
    sock = socket.create_connection(("127.0.0.1", port))
    sent = endless_box(sock, 64 * 2**20)
    sock.close()
    assert sent < 16 * 2**20, f"the broker read {sent} bytes of one box before the token"
    assert rss_mib(broker.process.pid) - before < 20
    assert "dropping a tcp connection" in broker.log_text() and "bytes before authenticating" in broker.log_text()
    client = RawAMP.tcp(port, broker.settings.token_path.read_text().strip())
    assert client.call(wire.ListPeers, scope="machine")["peers"] == []
    client.close()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a client under another uid")
def test_an_endless_box_from_another_uid_is_dropped_at_its_bound(broker_process: BrokerProcess) -> None:
    """Another uid on the UNIX socket (modes loosened on purpose) gets the small bound too."""
    for path in (broker_process.base, broker_process.socket_path.parent):
        os.chmod(path, 0o755)
    os.chmod(broker_process.socket_path, 0o666)
    before = rss_mib(broker_process.process.pid)
    script = textwrap.dedent(f"""
        import socket, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from hostile_support import endless_box
        sock = socket.socket(socket.AF_UNIX)
        sock.connect({str(broker_process.socket_path)!r})
        print("SENT", endless_box(sock, 64 * 2**20))
    """)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=60, cwd="/",
                            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
    assert result.stdout.startswith("SENT"), result.stdout + result.stderr
    assert int(result.stdout.split()[1]) < 16 * 2**20
    assert rss_mib(broker_process.process.pid) - before < 20


# --- 2. connections before the token, descriptors ---------------------------------------------------------


def test_idle_connections_before_the_token_are_capped_timed_out_and_status_works(short_dir: Path) -> None:
    """150 idle TCP and 150 idle UNIX connections under a 256-descriptor limit: past the cap
    the oldest are closed at once, the rest after the deadline, and `status` works throughout."""
    port = free_port()
    env = broker_env(short_dir, CLAUDE_PEERS_MAX_UNBOUND="32", CLAUDE_PEERS_UNBOUND_SECONDS="1")
    broker = BrokerProcess(short_dir, env, args=["--tcp", str(port)], wrapper=["prlimit", "--nofile=256:256"]).start()
    held: list[socket.socket] = []
    try:
        for _ in range(150):
            held.append(socket.create_connection(("127.0.0.1", port)))
            unix = socket.socket(socket.AF_UNIX)
            unix.connect(str(broker.socket_path))
            held.append(unix)
        status = cli_status(env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert all(hung_up(sock, timeout=10) for sock in held), "an idle connection outlived the deadline"
        log = broker.log_text()
        assert "closing the oldest of 32 connections" in log and "did not authenticate within 1 s" in log
        assert log.count("closing the oldest") < 5, "the evictions were not throttled"
    finally:
        for sock in held:
            sock.close()
        broker.stop()


def test_descriptors_are_raised_and_running_out_is_one_warning_while_served(short_dir: Path) -> None:
    """The soft descriptor limit is raised to the hard one; 300 bound connections over it
    give one clear warning, and a held connection is still served."""
    env = broker_env(short_dir)
    broker = BrokerProcess(short_dir, env, wrapper=["prlimit", "--nofile=64:160"]).start()
    held: list[RawAMP] = []
    try:
        limits = Path(f"/proc/{broker.process.pid}/limits").read_text()
        assert [line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")] == ["160"]
        for _ in range(300):
            try:
                client = RawAMP.unix(str(broker.socket_path), timeout=2)
                client.call(wire.Hello)
                client.call(wire.Status)  # a first real command binds it (a CLI at work)
            except (Closed, OSError):
                continue
            held.append(client)
        assert 100 < len(held) < 160
        time.sleep(0.5)  # the warning is written after the burst of refused accepts
        assert held[0].call(wire.Status)["status"]["pid"] == broker.process.pid
        log = broker.log_text()
        assert log.count("out of file descriptors (limit 160)") == 1, log[-3000:]
        assert "EMFILE recovery" not in log
        for client in held[:60]:
            client.close()
        time.sleep(0.2)
        assert cli_status(env).returncode == 0
    finally:
        for client in held:
            client.close()
        broker.stop()


# --- 5. the socket's directory -------------------------------------------------------------------------


def test_a_shared_socket_directory_is_refused_and_left_as_it_was(short_dir: Path) -> None:
    """CLAUDE_PEERS_SOCKET in a 1777 directory: exit 1 with a clear line; the mode stays 1777."""
    shared = short_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    env = broker_env(short_dir, CLAUDE_PEERS_SOCKET=str(shared / "cp.sock"))
    result = subprocess.run([sys.executable, "-m", "claudepeers.broker.main"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"the run directory {shared} (which holds the socket) is not private: mode 1777" in result.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert not os.path.lexists(shared / "cp.sock")


# --- 6. the run directory removed ------------------------------------------------------------------------


def test_a_broker_whose_run_directory_is_removed_stops_cleanly(short_dir: Path) -> None:
    """rm -r of the run directory: the broker notices, logs why and exits 0 (clients then
    start a fresh one) instead of running on where nobody can reach or stop it."""
    env = broker_env(short_dir, CLAUDE_PEERS_SOCKET_CHECK_SECONDS="0.2")
    broker = BrokerProcess(short_dir, env).start()
    try:
        shutil.rmtree(broker.socket_path.parent)
        assert broker.process.wait(15) == 0
        assert "was removed while the broker ran; stopping" in broker.log_text()
    finally:
        broker.stop()
    again = BrokerProcess(short_dir, env).start()  # the next client's autostart works again
    again.stop()


def test_the_token_and_tcp_are_ready_when_the_socket_answers(short_dir: Path) -> None:
    """The moment the socket answers, the TCP token file is there and TCP accepts (the test
    that reads the token after start raced the broker)."""
    port = free_port()
    broker = BrokerProcess(short_dir, broker_env(short_dir), args=["--tcp", str(port)])
    log = open(broker.log_path, "ab")
    broker.process = subprocess.Popen([sys.executable, "-m", "claudepeers.broker.main", "--tcp", str(port)],
                                      env=broker.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    try:
        wait_for_socket(broker.socket_path, broker.process)
        assert broker.settings.token_path.read_text().strip()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        broker.stop(signal.SIGTERM)


# --- 4. TCP cannot speak for a UNIX peer -----------------------------------------------------------------


def unix_peer(broker: BrokerProcess) -> tuple[RawAMP, tuple[int, float], str]:
    """A peer registered over the UNIX socket for this test process's session (its parent)."""
    from claudepeers.common import agents

    session = agents.session_of(os.getpid())
    client = RawAMP.unix(str(broker.socket_path))
    answer = client.call(wire.Register, agent_pid=session.pid, agent_start=session.start, client_type="unknown",
                         cwd="/work/alpha", delivery="push", name="alpha")
    assert "secret" not in answer or answer["secret"] is None
    return client, (session.pid, session.start), answer["peer_id"]


def test_a_tcp_client_cannot_take_over_attach_to_or_kill_a_unix_peer(tcp_broker: tuple[BrokerProcess, int]) -> None:
    """With the token but over TCP: registering as a UNIX peer's agent, attaching to it,
    registering as pid 1 or the broker, killing, stopping the broker: each refused; the UNIX
    peer keeps its bridge."""
    broker, port = tcp_broker
    token = broker.settings.token_path.read_text().strip()
    alpha, (pid, start), alpha_id = unix_peer(broker)
    intruder = RawAMP.tcp(port, token)
    with pytest.raises(RemoteError, match="IDENTITY_REJECTED: this agent session is peer"):
        intruder.call(wire.Register, agent_pid=pid, agent_start=start, client_type="codex", cwd="/x", delivery="push")
    with pytest.raises(RemoteError, match="IDENTITY_REJECTED"):
        intruder.call(wire.Attach, agent_pid=pid, agent_start=start)
    with pytest.raises(RemoteError, match="IDENTITY_REJECTED"):
        intruder.call(wire.Attach, agent_pid=pid, agent_start=start, secret="0" * 64)
    for special in (1, broker.process.pid):
        with pytest.raises(RemoteError, match="IDENTITY_REJECTED: pid"):
            intruder.call(wire.Register, agent_pid=special, agent_start=psutil.Process(special).create_time(),
                          client_type="codex", cwd="/x", delivery="push")
    with pytest.raises(RemoteError, match="KILL_REFUSED: kill_peer needs the UNIX socket"):
        intruder.call(wire.KillPeer, target="alpha")
    with pytest.raises(RemoteError, match="PERMISSION_DENIED: stopping the broker needs the UNIX socket"):
        intruder.call(wire.StopBroker)
    assert alpha.call(wire.Whoami)["peer"]["id"] == alpha_id  # its bridge was not superseded
    for client in (alpha, intruder):
        client.close()


def test_a_tcp_peer_resumes_only_with_its_secret_and_its_messages_say_tcp(tcp_broker: tuple[BrokerProcess, int]) -> None:
    """A TCP registration gets a secret; another TCP client without it cannot resume that
    peer, one with it can (same id); what it sends is pushed as unverified."""
    broker, port = tcp_broker
    token = broker.settings.token_path.read_text().strip()
    alpha, _, _ = unix_peer(broker)
    try:
        # The TCP client's own session: this process, under alpha's (the test's parent).
        agent = dict(agent_pid=os.getpid(), agent_start=psutil.Process().create_time(),
                     client_type="codex", cwd="/work/sandboxed", delivery="push")
        first = RawAMP.tcp(port, token)
        answer = first.call(wire.Register, **agent)
        secret = answer["secret"]
        assert len(secret) == 64
        first.call(wire.Send, to="alpha", body="from the sandbox")
        pushed = [m for m in alpha_pushes(alpha) if m["body"] == "from the sandbox"]
        assert pushed and pushed[0]["verified"] is False and pushed[0]["from_id"] == answer["peer_id"]
        other = RawAMP.tcp(port, token)
        with pytest.raises(RemoteError, match="IDENTITY_REJECTED"):
            other.call(wire.Register, **agent)
        again = RawAMP.tcp(port, token)
        resumed = again.call(wire.Register, **agent, secret=secret)
        assert resumed["peer_id"] == answer["peer_id"] and resumed["resumed"]
        for client in (first, other, again):
            client.close()
    finally:
        alpha.close()


def test_a_tcp_client_cannot_claim_a_session_it_does_not_run_in(tcp_broker: tuple[BrokerProcess, int]) -> None:
    """A live agent whose bridge has not registered yet (here a sleep) cannot be squatted
    over TCP: no process of its tree holds the TCP connection, so the claim is refused and
    mail for that agent can never reach the squatter; its own bridge then registers."""
    broker, port = tcp_broker
    token = broker.settings.token_path.read_text().strip()
    agent = subprocess.Popen(["sleep", "600"])
    try:
        claim = dict(agent_pid=agent.pid, agent_start=psutil.Process(agent.pid).create_time(),
                     client_type="claude-code", cwd="/work/victim", delivery="push", name="victim")
        squatter = RawAMP.tcp(port, token)
        with pytest.raises(RemoteError, match="IDENTITY_REJECTED: no process of agent pid .* holds this TCP connection"):
            squatter.call(wire.Register, **claim)
        with pytest.raises(RemoteError, match="IDENTITY_REJECTED"):
            squatter.call(wire.Attach, agent_pid=claim["agent_pid"], agent_start=claim["agent_start"])
        operator = RawAMP.unix(str(broker.socket_path))
        assert not [p for p in operator.call(wire.Status)["status"]["peers"] if p["name"] == "victim"]
        for client in (squatter, operator):
            client.close()
    finally:
        agent.kill()
        agent.wait()


def test_a_tcp_squatter_of_a_session_ends_when_its_agent_registers_on_the_socket(
        tcp_broker: tuple[BrokerProcess, int]) -> None:
    """A TCP client registers first as a live agent's session; when that agent's own bridge
    registers over the socket, the squatter's peer ends and the agent gets a peer of its own,
    which the squatter cannot take back with its secret."""
    from claudepeers.common import agents

    broker, port = tcp_broker
    session = agents.session_of(os.getpid())
    claim = dict(agent_pid=session.pid, agent_start=session.start, client_type="codex", cwd="/x", delivery="push")
    squatter = RawAMP.tcp(port, broker.settings.token_path.read_text().strip())
    squatted = squatter.call(wire.Register, **claim)
    alpha, _, alpha_id = unix_peer(broker)
    assert alpha_id != squatted["peer_id"]
    again = RawAMP.tcp(port, broker.settings.token_path.read_text().strip())
    with pytest.raises(RemoteError, match="registered over the UNIX socket; a TCP client cannot register as it"):
        again.call(wire.Register, **claim, secret=squatted["secret"])
    states = {p["id"]: p["state"] for p in alpha.call(wire.Status)["status"]["peers"]}
    assert states[squatted["peer_id"]] == "gone" and states[alpha_id] == "online"
    for client in (squatter, again, alpha):
        client.close()


def alpha_pushes(alpha: RawAMP) -> list[dict]:
    """Messages pushed to ``alpha`` so far (reads what is waiting with a Ping)."""
    alpha.drain(0.3)
    return alpha.pushed


# --- 3. pid reuse -----------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a pid namespace in which to reuse a pid")
def test_a_stale_connection_whose_pid_was_reused_cannot_register_as_the_new_owner(short_dir: Path) -> None:
    """A process connects and exits; its pid is reused by a child of agent A; the stale
    connection's Register for A is refused and A's bridge is not superseded."""
    env = broker_env(short_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-c", PID_REUSE_DRIVER,
         str(short_dir / "broker.log"), AGENT_A, BRIDGE_OF_A],
        env=env, capture_output=True, text=True, timeout=60, cwd=str(short_dir),
    )
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stdout + result.stderr
    report = __import__("json").loads(lines[-1])
    assert report["registered"] == "REGISTERED" and report["reused"], report
    assert report["register"].startswith("refused: IDENTITY_REJECTED: the process that opened this connection"), report
    assert "SUPERSEDED" not in result.stderr
