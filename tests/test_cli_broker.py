"""The real ``claude-peers`` CLI, as a subprocess, against a real broker subprocess.

One broker with two stand-in agents (a pushed-to Claude and an inline Codex) serves the
read-mostly tests; tests that end things (kill, kill-broker) get their own broker.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from cli_support import Agents, cli, cli_json, cli_many, read_line
from conftest import BrokerProcess, broker_env

EXIT_FAILED, EXIT_USAGE, EXIT_NO_BROKER = 1, 2, 3


class Network:
    """A broker plus a Claude peer ``alpha-claude`` and a Codex peer ``alpha-codex``."""

    def __init__(self, base: Path) -> None:
        """Start the broker (with a manhole) and both agents under ``base``."""
        self.broker = BrokerProcess(base, broker_env(base), args=["--manhole-default"]).start()
        self.env = self.broker.env
        self.agents = Agents(base, self.env)
        self.claude_id, self.claude = self.agents.start("claude", "alpha-claude", "reviewing the parser")
        self.codex_id, self.codex = self.agents.start("codex", "alpha-codex", "writing docs", inline=True)

    def close(self) -> None:
        """End the agents and the broker by pid."""
        self.agents.stop_all()
        self.broker.stop()


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """One running network for the read-mostly tests of this module."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    net = Network(base)
    try:
        yield net
    finally:
        net.close()
        shutil.rmtree(base, ignore_errors=True)


def one_line(stderr: str) -> str:
    """Assert that stderr holds exactly one line, and return it."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_status_json_reports_broker_and_every_peer(network: Network) -> None:
    """status --json: version, pid, socket, database, tcp, and both peers with their fields."""
    status = cli_json(network.env, "status", "--json")
    assert status["pid"] == network.broker.process.pid
    assert status["socket"] == network.env["CLAUDE_PEERS_SOCKET"]
    assert status["database"] == network.env["CLAUDE_PEERS_DB"]
    assert status["tcp"] is None
    peers = {p["name"]: p for p in status["peers"]}
    assert peers["alpha-claude"]["id"] == network.claude_id
    assert peers["alpha-claude"]["client_type"] == "claude-code"
    assert peers["alpha-codex"]["client_type"] == "codex"
    assert peers["alpha-codex"]["summary"] == "writing docs"
    assert all(p["state"] == "online" for p in peers.values())


def test_status_text_tags_names_ids_and_state(network: Network) -> None:
    """status: one block per peer with its [type] tag, name, id, cwd, summary, state, unread."""
    done = cli(network.env, "status")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Broker: running, version" in out and "tcp:      off" in out
    assert f"[claude-code] alpha-claude  ID: {network.claude_id}  online" in out
    assert f"[codex] alpha-codex  ID: {network.codex_id}  online" in out
    assert "summary: reviewing the parser" in out
    assert f"cwd: {network.broker.base}" in out
    assert "unread:" in out


def test_peers_lists_both_as_json_and_text(network: Network) -> None:
    """peers --json is a list with both peers; peers prints one tagged line each."""
    peers = cli_json(network.env, "peers", "--json")
    assert {p["id"] for p in peers} == {network.claude_id, network.codex_id}
    done = cli(network.env, "peers")
    assert done.returncode == 0
    assert f"[claude-code]  alpha-claude  ({network.claude_id})  online" in done.stdout
    assert f"[codex]  alpha-codex  ({network.codex_id})  online" in done.stdout


def test_send_to_pushed_peer_is_shown_and_unverified(network: Network) -> None:
    """send by name to a Claude with push: 'Shown'; the agent sees from_id cli, unverified."""
    done = cli(network.env, "send", "alpha-claude", "please", "rebase")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Shown to alpha-claude ({network.claude_id})")
    message = json.loads(read_line(network.claude, "MESSAGE ")[len("MESSAGE "):])
    assert message["body"] == "please rebase"
    assert message["from_id"] == "cli" and message["verified"] is False


def test_send_to_polling_peer_is_queued_and_readable_in_inbox(network: Network) -> None:
    """send --json to an inline Codex peer says queued; inbox shows the stored message."""
    answer = cli_json(network.env, "send", "--json", network.codex_id, "docs for the CLI?")
    assert answer["status"] == "queued" and answer["to_id"] == network.codex_id
    messages = cli_json(network.env, "inbox", "--json", "alpha-codex")
    assert any(m["id"] == answer["message_id"] and m["body"] == "docs for the CLI?" for m in messages)
    text = cli(network.env, "inbox", "alpha-codex")
    assert f"#{answer['message_id']}" in text.stdout and "docs for the CLI?" in text.stdout


def test_send_reply_to_and_thread_show_a_thread_to_the_operator(network: Network) -> None:
    """send --reply-to joins a thread of the recipient's own mail (another peer's is refused);
    thread <id> prints the whole thread, oldest first, read-only."""
    first = cli_json(network.env, "send", "--json", "alpha-codex", "which branch?")
    reply = cli_json(network.env, "send", "--json", "--reply-to", str(first["message_id"]), "alpha-codex", "p1")
    assert reply["thread_id"] == first["message_id"]
    done = cli(network.env, "send", "-r", str(reply["message_id"]), "alpha-codex", "thanks")
    assert done.returncode == 0 and f"(a reply in thread #{first['message_id']})" in done.stdout, done.stderr
    refused = cli(network.env, "send", "--reply-to", str(first["message_id"]), "alpha-claude", "not yours")
    assert refused.returncode == EXIT_FAILED and "is not in the mail of alpha-claude" in one_line(refused.stderr)
    assert cli(network.env, "send", "--reply-to", "x", "alpha-codex", "hi").returncode == EXIT_USAGE
    thread = cli(network.env, "thread", str(reply["message_id"]))
    assert thread.returncode == 0, thread.stderr
    out = thread.stdout
    assert out.startswith(f"Thread #{first['message_id']}: 3 messages")
    assert out.index("which branch?") < out.index("    p1") < out.index("thanks")
    assert f"reply to #{first['message_id']}" in out and "not shown yet" in out
    listed = cli_json(network.env, "thread", "--json", str(first["message_id"]))
    assert [m["body"] for m in listed["messages"]] == ["which branch?", "p1", "thanks"]
    missing = cli(network.env, "thread", "99999999")
    assert missing.returncode == EXIT_FAILED and "no message #99999999" in one_line(missing.stderr)


def test_send_reads_the_message_from_stdin(network: Network) -> None:
    """send <peer> - takes the message body from stdin, newlines kept."""
    done = cli(network.env, "send", "alpha-claude", "-", stdin="line one\nline two\n")
    assert done.returncode == 0, done.stderr
    message = json.loads(read_line(network.claude, "MESSAGE ")[len("MESSAGE "):])
    assert message["body"] == "line one\nline two\n"


def test_unknown_and_ambiguous_targets_fail_with_one_line(network: Network) -> None:
    """An unknown peer and an ambiguous name each give one stderr line and exit status 1."""
    unknown, ambiguous, kill_unknown = cli_many(
        network.env, [["send", "nobody", "hi"], ["send", "alpha", "hi"], ["kill", "nobody"]]
    )
    assert unknown.returncode == EXIT_FAILED
    assert "no peer has the id or name 'nobody'" in one_line(unknown.stderr)
    assert ambiguous.returncode == EXIT_FAILED
    assert "matches several peers" in one_line(ambiguous.stderr)
    assert kill_unknown.returncode == EXIT_FAILED and one_line(kill_unknown.stderr)
    assert unknown.stdout == ambiguous.stdout == ""


def test_log_prints_recent_events(network: Network) -> None:
    """log --json prints recent events, oldest first, including the peers' registrations."""
    done = cli(network.env, "log", "--json", "-n", "100")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["kind"] == "broker"
    assert {network.claude_id, network.codex_id} <= {e.get("peer_id") for e in events}
    text = cli(network.env, "log")
    assert "broker" in text.stdout and "started" in text.stdout


def test_log_follow_sees_a_message_sent_after_it_started(network: Network) -> None:
    """log -f prints the recent events, then a message event pushed after it started."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "claudepeers", "log", "-f", "--json", "-n", "1"],
        env=network.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        read_line(follower, "{")  # the recent event: the subscription is already in place
        answer = cli_json(network.env, "send", "--json", "alpha-codex", "sent while following")
        while True:
            event = json.loads(read_line(follower, "{"))
            if event["kind"] == "message" and event.get("message_id") == answer["message_id"]:
                break
        assert event["to_id"] == network.codex_id
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
        follower.stdout.close()
        follower.stderr.close()
    assert follower.returncode == 0


def test_manhole_answers_an_expression(network: Network) -> None:
    """claude-peers manhole evaluates piped input inside the broker and prints the answer."""
    done = cli(network.env, "manhole", stdin="6 * 7\n")
    assert done.returncode == 0, done.stderr
    assert "42" in done.stdout


def test_manhole_socket_is_private_and_sees_the_live_broker(network: Network) -> None:
    """The manhole socket is 0600; over it, the namespace holds the running broker."""
    path = network.broker.base / "run" / "claude-peers.manhole"
    assert path.stat().st_mode & 0o777 == 0o600
    done = cli(network.env, "manhole", "--socket", str(path), stdin="sorted(a.name for a in actors.values())\n")
    assert done.returncode == 0, done.stderr
    assert "['alpha-claude', 'alpha-codex']" in done.stdout


def test_doctor_reports_a_healthy_broker(network: Network) -> None:
    """doctor --json: the broker answers on our protocol; verdict ok; exit 0."""
    report = cli_json(network.env, "doctor", "--json")
    assert report["ok"] is True
    broker = [f for f in report["findings"] if f["check"] == "broker"][0]
    assert broker["level"] == "ok" and str(network.broker.process.pid) in broker["text"]


def test_kill_ends_the_agent_session(short_dir: Path, broker_process: BrokerProcess) -> None:
    """kill <name> terminates the agent process; status then shows the peer gone."""
    agents = Agents(short_dir, broker_process.env)
    try:
        peer_id, proc = agents.start("claude", "victim", "stuck")
        done = cli(broker_process.env, "kill", "--json", "victim")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["peer_id"] == peer_id and answer["outcome"] in ("terminated", "killed")
        assert proc.wait(10) is not None
        status = cli_json(broker_process.env, "status", "--json")
        assert [p["state"] for p in status["peers"] if p["id"] == peer_id] == ["gone"]
    finally:
        agents.stop_all()


def test_kill_broker_stops_it_cleanly(broker_process: BrokerProcess) -> None:
    """kill-broker: StopBroker through the broker; it exits 0; a running log -f sees it and ends."""
    pid = broker_process.process.pid
    follower = subprocess.Popen(
        [sys.executable, "-m", "claudepeers", "log", "-f", "--json", "-n", "1"],
        env=broker_process.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_line(follower, "{")
        done = cli(broker_process.env, "kill-broker")
        assert done.returncode == 0, done.stderr
        assert f"Broker stopped (pid {pid})" in done.stdout
        assert broker_process.process.wait(10) == 0
        assert "stop requested" in read_line(follower, "{")
        assert follower.wait(10) == EXIT_FAILED
        assert "the broker closed the connection" in one_line(follower.stderr.read())
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        follower.stdout.close()
        follower.stderr.close()


def test_every_command_reports_a_missing_broker(short_dir: Path) -> None:
    """With no broker (and no autostart) every broker command exits 3 with one clear line."""
    env = broker_env(short_dir)
    commands = [["status"], ["peers", "--json"], ["send", "x", "hi"], ["kill", "x"], ["kill-broker"],
                ["log"], ["inbox", "x"]]
    for args, done in zip(commands, cli_many(env, commands)):
        assert done.returncode == EXIT_NO_BROKER, (args, done.stderr)
        assert "no broker" in one_line(done.stderr), args
        assert done.stdout == ""


def test_doctor_and_manhole_without_broker(short_dir: Path) -> None:
    """doctor exits 1 with a verdict naming the missing broker; manhole exits 3."""
    env = broker_env(short_dir)
    doctor, manhole = cli_many(env, [["doctor"], ["manhole"]])
    assert doctor.returncode == EXIT_FAILED
    assert "Verdict: 1 problem(s). First: no broker answers" in doctor.stdout
    assert manhole.returncode == EXIT_NO_BROKER and "no manhole" in one_line(manhole.stderr)


def test_bad_arguments_exit_2_with_one_line(short_dir: Path) -> None:
    """Missing or malformed arguments and unknown commands: one line, exit status 2."""
    env = broker_env(short_dir)
    commands = [["send", "x"], ["kill"], ["frobnicate"], ["log", "-n", "many"], [], ["install", "--service-kind", "init"]]
    for args, done in zip(commands, cli_many(env, commands)):
        assert done.returncode == EXIT_USAGE, (args, done.stderr)
        assert one_line(done.stderr).startswith("claude-peers: "), args


def test_send_autostarts_a_broker_that_kill_broker_stops(short_dir: Path) -> None:
    """Without NO_AUTOSTART, send starts a broker; kill-broker then stops that broker."""
    env = broker_env(short_dir)
    del env["CLAUDE_PEERS_NO_AUTOSTART"]
    done = cli(env, "send", "nobody", "hi")
    assert done.returncode == EXIT_FAILED and "no peer" in one_line(done.stderr)
    pid = cli_json(env, "status", "--json")["pid"]
    try:
        stopped = cli(env, "kill-broker")
        assert stopped.returncode == 0, stopped.stderr
        probe = socket.socket(socket.AF_UNIX)
        with pytest.raises(OSError):
            probe.connect(env["CLAUDE_PEERS_SOCKET"])
        probe.close()
    finally:
        _end_pid(pid)


def _end_pid(pid: int) -> None:
    """End a process we caused to start (the autostarted broker), if it still runs."""
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    proc.terminate()
    psutil.wait_procs([proc], timeout=10)


def test_manhole_in_a_terminal_runs_raw_and_leaves_on_ctrl_d(network: Network) -> None:
    """In a pseudo-terminal: keys go through raw, the answer comes back, Ctrl-D ends the session."""
    import os
    import pty
    import select as select_module

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "claudepeers", "manhole"],
        env=network.env, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )
    os.close(terminal)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 10
        while marker not in seen:
            ready, _, _ = select_module.select([controller], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no {marker!r} in {seen!r}"
            seen += os.read(controller, 4096)

    try:
        read_until(b">>> ")
        os.write(controller, b"7 * 6\r")
        read_until(b"42")
        os.write(controller, b"\x04")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


def test_cli_over_tcp_with_the_token(short_dir: Path) -> None:
    """With CLAUDE_PEERS_URL the CLI speaks TCP, presenting the token; status shows TCP on."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    broker = BrokerProcess(short_dir, broker_env(short_dir, CLAUDE_PEERS_TCP="1", CLAUDE_PEERS_PORT=str(port)))
    broker.start()
    try:
        env = dict(broker.env, CLAUDE_PEERS_URL=f"tcp://127.0.0.1:{port}")
        # The broker writes the token and listens on TCP in the same reactor turn as the
        # UNIX socket, so once the socket answers (start() waited for it) both are there.
        assert (short_dir / "run" / "claude-peers.token").stat().st_mode & 0o777 == 0o600
        status = cli_json(env, "status", "--json")
        assert status["tcp"] == f"127.0.0.1:{port}"
        assert cli(env, "status").stdout.count(f"tcp:      on (127.0.0.1:{port})") == 1
    finally:
        broker.stop()


def test_manhole_found_through_the_broker_status(short_dir: Path) -> None:
    """A broker serving its manhole at a custom path: the CLI learns the path from status."""
    custom = short_dir / "mh.sock"
    broker = BrokerProcess(short_dir, broker_env(short_dir), args=["--manhole", str(custom)]).start()
    try:
        done = cli(broker.env, "manhole", stdin="'manhole' + ' ok'\n")
        assert done.returncode == 0, done.stderr
        assert "'manhole ok'" in done.stdout
    finally:
        broker.stop()
