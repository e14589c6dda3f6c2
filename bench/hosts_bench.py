"""Cross-host benchmark: brokers as separate hosts sharing one PostgreSQL database (DESIGN 7).

    .venv/bin/python bench/hosts_bench.py [--hosts 2] [--latency 300] [--seconds 10] [--window 16]

It starts its own PostgreSQL server (tests/pg_server.py, fsync on) and one broker process per
host (distinct CLAUDE_PEERS_HOST, own socket and HOME), then, through AMP on the brokers'
UNIX sockets, with simulated peers whose dummy agents pass the broker's identity check
for real (broker_bench's fork-connect-exec trick):

1. latency host to host: a peer of host 0 sends to a peer of host 1, one message at a
   time; from calling Send to the recipient's Deliver push arriving (the channel
   notification a bridge would send at once), and to the Send answer ``shown`` (which needs
   the recipient's acknowledgement committed and notified back): p50/p99;
2. durable messages per second: on every host ``--senders`` peers each keep ``--window``
   Sends in flight to peers of the other hosts for ``--seconds``; a message counts when its
   Send answer arrives (committed; ``shown`` once the other host said so). Every pushed id
   is checked to arrive once.

Blocking sockets and a thread per connection (simple, and the load generator's CPU is
reported beside the brokers'): on a 2-core machine the generator competes with the
brokers and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from support import ROOT  # first: it puts this checkout and its tests on sys.path
import psutil

from broker_load import fork_agents
from claudepeers.wire import box as ampbox
from pg_server import PostgresServer

BODY = "benchmark message: " + "x" * 80


class Peer:
    """One simulated peer on one host: a blocking AMP connection read by its own thread."""

    def __init__(self, sock: socket.socket, agent_pid: int, name: str) -> None:
        self.sock = sock
        self.agent_pid = agent_pid
        self.name = name
        self.peer_id = ""
        self._asks = 0
        self._lock = threading.Lock()
        self._answers: dict[bytes, Any] = {}
        self._events: dict[bytes, threading.Event] = {}
        self.on_deliver: Any = None
        self.on_answer: Any = None
        self.seen: dict[int, int] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)

    def write(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def ask(self, command: str, pairs: list[tuple[bytes, bytes]], wait: bool = True) -> Any:
        with self._lock:
            self._asks += 1
            tag = str(self._asks).encode()
            if wait:
                self._events[tag] = threading.Event()
            self.sock.sendall(ampbox.call_box(command, tag, pairs))
        if not wait:
            return tag
        self._events[tag].wait(60)
        return self._answers.pop(tag)

    def _read(self) -> None:
        reader = ampbox.BoxReader()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            for box in reader.feed(data):
                self._box(box)

    def _box(self, box: dict) -> None:
        tag = box.get(b"_answer") or box.get(b"_error")
        if tag is not None and b"_command" not in box:
            if self.on_answer is not None and tag not in self._events:
                self.on_answer(self, box)
                return
            self._answers[tag] = box
            event = self._events.pop(tag, None)
            if event is not None:
                event.set()
            return
        name = box.get(b"_command")
        ask = box.get(b"_ask")
        if name == b"Deliver":
            now = time.perf_counter()
            messages = json.loads(ampbox.join_chunks(box, b"messages"))
            for message in messages:
                self.seen[message["id"]] = self.seen.get(message["id"], 0) + 1
                if self.on_deliver is not None:
                    self.on_deliver(message, now)
            flags = ampbox.list_of([ampbox.boolean(True)] * len(messages))
            if ask is not None:
                self.write(b"\x00\x07_answer" + ampbox.length_prefixed(ask) + ampbox.pair(b"shown", flags) + ampbox.END)
        elif name == b"Ping" and ask is not None:
            self.write(b"\x00\x07_answer" + ampbox.length_prefixed(ask) + ampbox.END)


def send_pairs(to: str) -> list[tuple[bytes, bytes]]:
    return [(b"to", to.encode()), *ampbox.split_chunks(b"body", BODY.encode())]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="cp-hb-", dir="/tmp"))
        self.server = PostgresServer(durable=True)
        self.brokers: list[subprocess.Popen] = []
        self.peers: dict[int, list[Peer]] = {}

    def start(self) -> None:
        self.server.start()
        database = self.server.fresh_database()
        dsn = self.server.dsn(database)
        for index in range(self.args.hosts):
            home = self.base / f"h{index}"
            home.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PEER")}
            env.update(HOME=str(home), CLAUDE_PEERS_SOCKET=str(home / "run" / "cp.sock"), CLAUDE_PEERS_DB=dsn,
                       CLAUDE_PEERS_HOST=f"h{index}", CLAUDE_PEERS_NO_AUTOSTART="1",
                       CLAUDE_PEERS_MESSAGES_PER_MINUTE="100000000", CLAUDE_PEERS_MAX_UNREAD="10000000",
                       PYTHONPATH=str(ROOT))
            log = open(home / "broker.log", "ab")
            self.brokers.append(subprocess.Popen([sys.executable, "-m", "claudepeers.broker.main"], env=env,
                                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            deadline = time.monotonic() + 60
            while not (home / "run" / "cp.sock").exists():
                if time.monotonic() > deadline or self.brokers[-1].poll() is not None:
                    raise RuntimeError(f"broker h{index} did not start: {(home / 'broker.log').read_text()[-2000:]}")
                time.sleep(0.05)
            time.sleep(0.3)
            count = self.args.senders + 1
            self.peers[index] = []
            for n, (sock, pid) in enumerate(fork_agents(str(home / "run" / "cp.sock"), count)):
                peer = Peer(sock, pid, f"h{index}p{n}")
                peer.reader.start()
                start = psutil.Process(pid).create_time()
                answer = peer.ask("Register", [
                    (b"agent_pid", str(pid).encode()), (b"agent_start", repr(start).encode()),
                    (b"client_type", b"claude-code"), (b"cwd", b"/tmp/cp-bench"), (b"name", peer.name.encode()),
                    (b"delivery", b"push")])
                if b"peer_id" not in answer:
                    raise RuntimeError(f"Register failed: {answer}")
                peer.peer_id = answer[b"peer_id"].decode()
                self.peers[index].append(peer)
        time.sleep(3)  # every host reads the others' peers (notified; read again each 10 s)

    def latency(self) -> dict[str, Any]:
        sender, recipient = self.peers[0][0], self.peers[1][-1]
        arrived: dict[int, float] = {}
        recipient.on_deliver = lambda message, now: arrived.setdefault(message["id"], now)
        pushes, answers, statuses = [], [], {}
        for _ in range(self.args.latency):
            began = time.perf_counter()
            box = sender.ask("Send", send_pairs(f"{recipient.name}@h1"))
            ended = time.perf_counter()
            status = box.get(b"status", b"error").decode()
            statuses[status] = statuses.get(status, 0) + 1
            if b"message_id" in box:
                message_id = int(box[b"message_id"])
                deadline = time.monotonic() + 5
                while message_id not in arrived and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if message_id in arrived:
                    pushes.append(arrived[message_id] - began)
            answers.append(ended - began)
        recipient.on_deliver = None
        return {"sends": self.args.latency, "statuses": statuses, "push_ms": _summary(pushes),
                "answer_ms": _summary(answers)}

    def throughput(self) -> dict[str, Any]:
        hosts = list(self.peers)
        counted = [0]
        statuses: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()
        t0 = time.perf_counter() + 1.0
        t1 = t0 + self.args.seconds
        threads = []
        for index in hosts:
            others = [p for h in hosts if h != index for p in self.peers[h]]
            for n, sender in enumerate(self.peers[index][: self.args.senders]):
                targets = [f"{p.name}@{p.name.split('p')[0]}" for p in others]

                def on_answer(peer: Peer, box: dict, targets: list[str] = targets) -> None:
                    now = time.perf_counter()
                    status = box.get(b"status", b"error").decode()
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        if t0 <= now < t1 and status != "error":
                            counted[0] += 1
                    if not stop.is_set():
                        peer.ask("Send", send_pairs(targets[int(now * 1e6) % len(targets)]), wait=False)

                sender.on_answer = on_answer
                threads.append((sender, targets))
        started = {b.pid: psutil.Process(b.pid).cpu_times() for b in self.brokers}
        self_cpu = psutil.Process().cpu_times()
        for sender, targets in threads:
            for k in range(self.args.window):
                sender.ask("Send", send_pairs(targets[k % len(targets)]), wait=False)
        time.sleep(max(0.0, t1 - time.perf_counter()))
        stop.set()
        time.sleep(self.args.seconds * 0 + 5)  # let the windows drain
        cpu = {f"h{i}": _cpu(psutil.Process(b.pid).cpu_times(), started[b.pid]) / self.args.seconds
               for i, b in enumerate(self.brokers)}
        mine = _cpu(psutil.Process().cpu_times(), self_cpu) / self.args.seconds
        seen = [count for peers in self.peers.values() for p in peers for count in p.seen.values()]
        return {"hosts": len(hosts), "senders_per_host": self.args.senders, "window": self.args.window,
                "msg_per_s": round(counted[0] / self.args.seconds), "statuses": statuses,
                "pushed_ids": len(seen), "pushed_twice": sum(1 for c in seen if c > 1),
                "broker_cpu_share": {k: round(v, 2) for k, v in cpu.items()}, "generator_cpu_share": round(mine, 2)}

    def close(self) -> None:
        for broker in self.brokers:  # the brokers first: their peers' agents still live
            broker.terminate()
            try:
                broker.wait(20)
            except subprocess.TimeoutExpired:
                broker.kill()
        for peers in self.peers.values():
            for peer in peers:
                try:
                    os.kill(peer.agent_pid, 9)
                except ProcessLookupError:
                    pass
        self.server.close()


def _cpu(now: Any, before: Any) -> float:
    return (now.user + now.system) - (before.user + before.system)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered) * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max": round(ordered[-1] * 1000, 2), "n": len(ordered)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--senders", type=int, default=4, help="sending peers per host")
    parser.add_argument("--window", type=int, default=16, help="Sends in flight per sender")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", type=int, default=300, help="sequential sends for the latency figures")
    args = parser.parse_args()
    bench = Bench(args)
    try:
        bench.start()
        report = {"load_average": os.getloadavg()}
        if args.latency:
            report["latency"] = bench.latency()
        if args.seconds:
            report["throughput"] = bench.throughput()
        print(json.dumps(report, indent=2))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
