"""Fan-out benchmark: one message to ``scope:machine`` with N recipients, through the real wire.

    python bench/fanout_bench.py [--peers 50] [--rounds 30]

It starts a real broker subprocess in a short temporary directory and N + 1 simulated
peers on its UNIX socket, each with a dummy agent process of its own (the broker's identity
checks run for real; see ``broker_load.py``, whose ``fork_agents`` this reuses). Every
recipient answers each ``Deliver`` at once with ``shown=True``, as a bridge whose agent saw
the message. Per round it measures, from the sender's ``SendMany``:

- until the last recipient received its ``Deliver`` (every message committed and pushed);
- until ``SendMany`` answered (every recipient's ``shown`` is back at the broker).

Then it prints p50/p99/max of both over the rounds and checks that each recipient was
pushed each round's message exactly once. Twisted-free clients (``claudepeers/wire/box.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import ROOT, percentile  # first: it puts this checkout and its tests on sys.path
import psutil

from broker_load import fork_agents
from claudepeers.wire import box as ampbox

BODY = "fan-out benchmark: " + "x" * 80


class Peer:
    """One simulated peer's blocking connection."""

    def __init__(self, sock: socket.socket, agent_pid: int, name: str) -> None:
        self.sock, self.agent_pid, self.name = sock, agent_pid, name
        self.reader = ampbox.BoxReader()
        self.asks = 0
        self.peer_id = ""
        self.seen: dict[int, int] = {}
        self.last_push = 0.0

    def call(self, command: str, arguments: list[tuple[bytes, bytes]]) -> bytes:
        """Send one call; its ask."""
        self.asks += 1
        ask = b"%x" % self.asks
        self.sock.sendall(ampbox.call_box(command, ask, arguments))
        return ask

    def boxes(self) -> list[ampbox.Box]:
        """Whatever boxes arrived (blocks until some bytes do)."""
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError(f"the broker closed {self.name}'s connection")
        return self.reader.feed(data)


def start_broker(base: Path) -> tuple[subprocess.Popen, Path]:
    """A broker subprocess with limits raised out of the way; returns it and its socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PEER")}
    env.update(HOME=str(base), PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               CLAUDE_PEERS_NO_AUTOSTART="1", CLAUDE_PEERS_MESSAGES_PER_MINUTE="100000000",
               CLAUDE_PEERS_MAX_UNREAD="100000000")
    socket_path = base / "run" / "cp.sock"
    log = open(base / "broker.log", "ab")
    broker = subprocess.Popen([sys.executable, "-m", "claudepeers.broker.main", "--socket", str(socket_path),
                               "--db", str(base / "peers.db")], env=env, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=log, cwd=str(base))
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise RuntimeError(f"the broker exited; see {base / 'broker.log'}")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(socket_path))
            return broker, socket_path
        except OSError:
            time.sleep(0.02)  # waiting for another process to listen
        finally:
            probe.close()
    raise RuntimeError("the broker did not start listening")


def register(peer: Peer) -> None:
    """Register the peer with its dummy agent as the agent (push delivery)."""
    start = psutil.Process(peer.agent_pid).create_time()
    ask = peer.call("Register", [(b"agent_pid", str(peer.agent_pid).encode()), (b"agent_start", repr(start).encode()),
                                 (b"client_type", b"claude-code"), (b"cwd", b"/tmp/cp-fanout"),
                                 (b"name", peer.name.encode()), (b"delivery", b"push")])
    while not peer.peer_id:
        for box in peer.boxes():
            if box.get(b"_answer") == ask:
                peer.peer_id = box[b"peer_id"].decode()
            elif b"_error" in box:
                raise RuntimeError(f"Register failed: {box.get(b'_error_description', b'').decode()}")


def one_round(sender: Peer, recipients: list[Peer]) -> tuple[float, float, int]:
    """One SendMany to scope:machine: (seconds to the last Deliver, seconds to the answer, recipients)."""
    by_fd = {p.sock.fileno(): p for p in [sender, *recipients]}
    waiting = {p.sock.fileno() for p in recipients}
    began = time.perf_counter()
    ask = sender.call("SendMany", [(b"to", b"scope:machine"), *ampbox.split_chunks(b"body", BODY.encode())])
    last_push = answered = 0.0
    count = 0
    while waiting or not answered:
        ready, _, _ = select.select(list(by_fd), [], [], 10.0)
        if not ready:
            raise RuntimeError(f"stalled: {len(waiting)} recipients not pushed, answered={bool(answered)}")
        for fd in ready:
            peer = by_fd[fd]
            for box in peer.boxes():
                if box.get(b"_command") == b"Deliver":
                    now = time.perf_counter()
                    messages = json.loads(ampbox.join_chunks(box, b"messages"))
                    for message in messages:
                        peer.seen[message["id"]] = peer.seen.get(message["id"], 0) + 1
                    flags = ampbox.list_of([ampbox.boolean(True)] * len(messages))
                    peer.sock.sendall(ampbox.encode_box([(b"_answer", box[b"_ask"]), (b"shown", flags)]))
                    if fd in waiting:
                        waiting.discard(fd)
                        last_push = now
                elif box.get(b"_answer") == ask and peer is sender:
                    answered = time.perf_counter()
                    outcomes = json.loads(ampbox.join_chunks(box, b"recipients"))
                    count = len(outcomes)
                    statuses = {o["status"] for o in outcomes}
                    if statuses != {"shown"}:
                        raise RuntimeError(f"outcomes other than shown: {statuses}")
                elif b"_error" in box:
                    raise RuntimeError(box.get(b"_error_description", b"").decode())
    return last_push - began, answered - began, count



def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=50, help="recipients of each message")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    broker = None
    agents: list[tuple[socket.socket, int]] = []
    try:
        broker, socket_path = start_broker(base)
        agents = fork_agents(str(socket_path), args.peers + 1)
        peers = [Peer(sock, pid, f"f{i}") for i, (sock, pid) in enumerate(agents)]
        for peer in peers:
            register(peer)
        sender, recipients = peers[0], peers[1:]
        one_round(sender, recipients)  # warm-up (first statements, caches)
        pushed, answered = [], []
        for _ in range(args.rounds):
            last, answer, count = one_round(sender, recipients)
            assert count == args.peers, count
            pushed.append(last)
            answered.append(answer)
        assert all(set(p.seen.values()) == {1} and len(p.seen) == args.rounds + 1 for p in recipients), \
            "a recipient was pushed a message twice or missed one"
        ms = 1000.0
        print(f"fan-out to {args.peers} peers, {args.rounds} rounds (load average {os.getloadavg()[0]:.2f}):")
        for label, values in (("until the last recipient's Deliver", pushed), ("until SendMany answered", answered)):
            print(f"  {label}: p50 {statistics.median(values) * ms:.1f} ms, p99 {percentile(values, 0.99) * ms:.1f} ms, "
                  f"max {max(values) * ms:.1f} ms")
        print("  every recipient was pushed every message exactly once")
        return 0
    finally:
        for sock, pid in agents:
            sock.close()
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if broker is not None and broker.poll() is None:
            broker.send_signal(signal.SIGTERM)
            try:
                broker.wait(20)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
