"""The load generators of ``broker_bench.py``: simulated peers on the broker's socket, without Twisted.

Each runs as a subprocess (``python bench/broker_load.py --socket S --peers N --index I``) and
talks to the orchestrating ``broker_bench.py`` in JSON lines on stdin and stdout.

How a simulated peer passes the broker's identity check honestly: the broker requires the
claimed agent process (pid + start time) to be alive and to be an ancestor of the process
that connected (SO_PEERCRED). Each simulated peer therefore has its own dummy agent
process: a load generator creates a UNIX socket, forks a child, the child ``connect()``s
that socket to the broker (so the kernel records the child as the peer of the
connection), then ``exec``s ``sleep`` (same pid, same start time). The load generator
keeps its copy of the connected socket and speaks AMP over it; Register claims the child
as agent, so the broker's liveness and ancestry checks run for real and pass
(``is_ancestor`` counts the connecting process itself). Every process started here is
ended by its pid (the dummies also carry PR_SET_PDEATHSIG so they die with their parent).

The machine has 2 cores: the load generators compete with the broker for CPU, so the
report shows the CPU each side used during the measurement. To leave the broker as much
of it as possible, the load generators do not use Twisted (its AMP cost them ~130 us of
CPU per message): they speak the same boxes, argument by argument as ``wire.py`` declares
them, through the project's Twisted-free codec (``claudepeers/wire/box.py``) on non-blocking sockets
and one epoll per process, at about a fifth of that cost.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # the project, and amp_poller next to this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import amp_poller  # noqa: E402
import psutil  # noqa: E402

from claudepeers.wire import box as ampbox  # noqa: E402

BODY = "benchmark message: " + "x" * 80  # about 100 bytes, a short agent-to-agent note
SLEEP = shutil.which("sleep") or "/bin/sleep"


def _say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fork_agents(socket_path: str, count: int) -> list[tuple[socket.socket, int]]:
    """``count`` sockets connected to the broker, each by its own dummy agent process."""
    libc = ctypes.CDLL(None, use_errno=True)
    read_end, write_end = os.pipe()
    made: list[tuple[socket.socket, int]] = []
    for index in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the dummy agent: connect, report, become `sleep`
            try:
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the load generator
                sock.connect(socket_path)
                os.write(write_end, index.to_bytes(4, "little"))
                os.execv(SLEEP, [SLEEP, "3600"])
            finally:
                os._exit(1)
        made.append((sock, pid))
    os.close(write_end)
    received = 0
    while received < 4 * count:
        chunk = os.read(read_end, 4 * count - received)
        if not chunk:
            raise RuntimeError("a dummy agent failed to connect to the broker")
        received += len(chunk)
    os.close(read_end)
    return made


#: The start of every Send box: the ask, the recipient and the (constant) body follow.
SEND_HEAD = ampbox.pair(b"_command", b"Send") + b"\x00\x04_ask"
#: Send's ``body`` (wire.BigText), encoded once.
BODY_PAIRS = b"".join(ampbox.pair(k, v) for k, v in ampbox.split_chunks(b"body", BODY.encode()))
REGISTER_HEAD = ampbox.pair(b"_command", b"Register") + b"\x00\x04_ask"
ANSWER_KEY = b"\x00\x07_answer"
#: Registers in flight per load generator (the broker checks each agent with psutil).
REGISTER_BATCH = 50


class SimPeer(amp_poller.Connection):
    """One simulated peer: its connection to the broker and what its bridge was shown."""

    __slots__ = ("agent_pid", "name", "peer_id", "register_ask", "pending", "seen", "me")

    def __init__(self, sock: socket.socket, agent_pid: int, name: str) -> None:
        super().__init__(sock)
        self.agent_pid = agent_pid
        self.name = name
        self.peer_id = ""
        self.register_ask = b""
        self.pending: dict[bytes, float] = {}  # ask of each Send in flight -> when it was queued
        self.seen: dict[int, int] = {}  # message id -> times a Deliver carried it
        self.me = -1  # own index in the current phase's targets


class Phase:
    """One load phase: closed loop (``window`` sends in flight per peer) or paced (``rate``)."""

    def __init__(self, cmd: dict, index: int) -> None:
        self.closed = cmd["mode"] == "closed"
        wall_to_perf = time.perf_counter() - time.time()  # one clock in the hot loop
        self.start = cmd["start"] + wall_to_perf
        self.t0 = self.start + cmd["warmup"]
        self.t1 = self.t0 + cmd["duration"]
        self.window: int = cmd["window"]
        self.rate: float = cmd["rate"]  # this worker's share, msg/s
        self.rng = random.Random(index * 7919 + int(cmd["start"]))
        self.targets: list[str] = cmd["targets"]
        self.tails = [ampbox.pair(b"to", t.encode()) + BODY_PAIRS + ampbox.END for t in self.targets]
        self.begun = self.stopping = False
        self.outstanding = self.issued = self.counted = 0
        self.latencies: list[float] = []


class LoadGenerator(amp_poller.Poller):
    """The simulated peers of one load-generator process, served by one epoll loop."""

    def __init__(self, index: int, agents: list[tuple[socket.socket, int]]) -> None:
        super().__init__()
        self.index = index
        self.peers = [SimPeer(sock, pid, f"w{index}-p{i}") for i, (sock, pid) in enumerate(agents)]
        for peer in self.peers:
            self.add(peer)
        self.watch(0)  # the driver's commands, JSON lines on stdin
        self.stdin = b""
        self.phase: Phase | None = None
        self.quit = False
        self.delivered: list[tuple[int, bytes]] = []
        self.statuses: dict[bytes, int] = {}
        self.errors: dict[str, int] = {}
        self.pushes = 0  # Deliver boxes received (the broker batches what queues meanwhile)
        self.shown: dict[int, bytes] = {}  # n -> Deliver answer's shown=[True] * n, encoded

    # --- boxes from the broker -----------------------------------------------------------

    def box_received(self, conn: amp_poller.Connection, box: ampbox.Box) -> None:
        """Send answers and errors, Register answers, and the broker's pushes."""
        peer: SimPeer = conn  # type: ignore[assignment]
        ask = box.get(b"_answer")
        if ask is not None:
            began = peer.pending.pop(ask, None)
            if began is not None:
                self.answered(peer, box, began)
            elif ask == peer.register_ask:
                peer.peer_id = box[b"peer_id"].decode()
            else:
                raise RuntimeError(f"{peer.name}: an answer to no question ({ask!r})")
        elif b"_command" in box:
            self.command(peer, box)
        elif b"_error" in box:
            code = box.get(b"_error_code", b"?").decode(errors="replace")
            text = box.get(b"_error_description", b"").decode(errors="replace")
            if peer.pending.pop(box[b"_error"], None) is None:  # not a Send: the Register
                raise RuntimeError(f"{peer.name}: Register failed: {code}: {text}")
            self.tally_error(f"{code}: {text}")
            self.after(peer, time.perf_counter())

    def answered(self, peer: SimPeer, box: ampbox.Box, began: float) -> None:
        """A Send answer: counted when ``delivered`` inside the window."""
        ended = time.perf_counter()
        status = box[b"status"]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == b"shown":
            self.delivered.append((int(box[b"message_id"]), box[b"to_id"]))
            phase = self.phase
            assert phase is not None
            if phase.t0 <= ended < phase.t1:
                phase.counted += 1
                phase.latencies.append(ended - began)
        self.after(peer, ended)

    def command(self, peer: SimPeer, box: ampbox.Box) -> None:
        """Deliver (a batch of messages, all shown at once), Ping, ShownElsewhere."""
        name = box[b"_command"]
        ask = box.get(b"_ask")
        if name == b"Deliver":
            messages = json.loads(ampbox.join_chunks(box, b"messages"))
            self.pushes += 1
            seen = peer.seen
            for message in messages:
                message_id = message["id"]
                seen[message_id] = seen.get(message_id, 0) + 1
            if ask is not None:
                shown = self.shown.get(len(messages))
                if shown is None:  # shown: ListOf(Boolean), one True per message
                    flags = ampbox.list_of([ampbox.boolean(True)] * len(messages))
                    shown = self.shown[len(messages)] = ampbox.pair(b"shown", flags) + ampbox.END
                self.queue(peer, ANSWER_KEY + ampbox.length_prefixed(ask) + shown)
        elif name == b"Ping":
            if ask is not None:
                self.queue(peer, ANSWER_KEY + ampbox.length_prefixed(ask) + ampbox.END)
        elif name != b"ShownElsewhere":  # nothing else is expected here: make it visible
            self.tally_error(f"unexpected command {name.decode(errors='replace')}")
            if ask is not None:  # answered as Twisted answers a command it has no responder for
                self.queue(peer, ampbox.encode_box([(b"_error", ask), (b"_error_code", b"UNHANDLED"),
                                                   (b"_error_description", b"no responder")]))

    def connection_lost(self, conn: amp_poller.Connection) -> None:
        """The broker closed a connection: its Sends in flight fail (as Twisted's would)."""
        peer: SimPeer = conn  # type: ignore[assignment]
        if not peer.peer_id:
            raise RuntimeError(f"the broker closed {peer.name}'s connection before Register answered")
        pending, peer.pending = peer.pending, {}
        for _ in pending:
            self.tally_error("connection lost")
            self.after(peer, time.perf_counter())

    def tally_error(self, key: str) -> None:
        key = key[:120]
        self.errors[key] = self.errors.get(key, 0) + 1

    # --- registration --------------------------------------------------------------------

    def register_all(self, timeout: float = 120.0) -> None:
        """Register every peer, its own dummy agent as the agent, REGISTER_BATCH at a time."""
        waiting = list(reversed(self.peers))
        deadline = time.monotonic() + timeout
        while True:
            asked = [p for p in self.peers if p.register_ask and not p.peer_id]
            while waiting and len(asked) < REGISTER_BATCH:
                peer = waiting.pop()
                start = psutil.Process(peer.agent_pid).create_time()
                peer.register_ask = peer.next_ask()
                self.queue(peer, REGISTER_HEAD + ampbox.length_prefixed(peer.register_ask) + ampbox.encode_box([
                    (b"agent_pid", str(peer.agent_pid).encode()), (b"agent_start", str(start).encode()),
                    (b"client_type", b"claude-code"), (b"cwd", b"/tmp/cp-bench"),
                    (b"name", peer.name.encode()), (b"delivery", b"push"),
                ]))
                asked.append(peer)
            if not asked:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(asked) + len(waiting)} Registers unanswered after {timeout:g} s")
            self.flush()
            self.turn(1.0)

    # --- load ----------------------------------------------------------------------------

    def send(self, peer: SimPeer, phase: Phase) -> None:
        """Queue one Send from ``peer`` to a random target other than itself."""
        if peer.lost:
            return
        if peer.me < 0:
            to = int(phase.rng.random() * len(phase.tails))
        else:
            to = int(phase.rng.random() * (len(phase.tails) - 1))
            to += to >= peer.me
        ask = peer.next_ask()
        phase.outstanding += 1
        peer.pending[ask] = time.perf_counter()
        self.queue(peer, SEND_HEAD + ampbox.length_prefixed(ask) + phase.tails[to])

    def after(self, peer: SimPeer, now: float) -> None:
        """A Send was answered or failed: send the next one, or finish the phase."""
        phase = self.phase
        assert phase is not None
        phase.outstanding -= 1
        if phase.closed and not phase.stopping and now < phase.t1:
            self.send(peer, phase)
        elif phase.stopping and phase.outstanding == 0:
            self.finish()

    def timers(self) -> None:
        """Start the phase at its time, pace it, stop it at the window's end."""
        phase = self.phase
        if phase is None or phase.stopping:
            return
        now = time.perf_counter()
        if now < phase.start:
            return
        if now >= phase.t1:
            phase.stopping = True
            if phase.outstanding == 0:
                self.finish()
            return
        if not phase.begun:
            phase.begun = True
            if phase.closed:
                for peer in self.peers:
                    for _ in range(phase.window):
                        self.send(peer, phase)
        if not phase.closed and phase.rate > 0:
            for _ in range(int((now - phase.start) * phase.rate) - phase.issued):
                self.send(self.peers[phase.issued % len(self.peers)], phase)
                phase.issued += 1

    def timeout(self) -> float | None:
        """How long the loop may sleep: until the start, the next paced send or the end."""
        phase = self.phase
        if phase is None or phase.stopping:
            return None
        now = time.perf_counter()
        if now < phase.start:
            return phase.start - now
        if phase.closed or phase.rate <= 0:
            return max(0.0, phase.t1 - now)
        due = phase.start + (phase.issued + 1) / phase.rate
        return max(0.0, min(due, phase.t1) - now)

    def finish(self) -> None:
        phase, self.phase = self.phase, None
        assert phase is not None
        _say({"drained": {"counted": phase.counted, "latencies": phase.latencies}})

    # --- the driver's commands -----------------------------------------------------------

    def fd_readable(self, fd: int) -> None:
        """Commands from the driver: load, report, quit."""
        data = os.read(fd, 1 << 20)
        if not data:
            self.quit = True
            return
        *lines, self.stdin = (self.stdin + data).split(b"\n")
        for line in lines:
            cmd = json.loads(line)
            if cmd["cmd"] == "load":
                if self.phase is not None:
                    raise RuntimeError("a load phase is already running")
                phase = self.phase = Phase(cmd, self.index)
                for peer in self.peers:
                    peer.me = phase.targets.index(peer.peer_id) if peer.peer_id in phase.targets else -1
            elif cmd["cmd"] == "report":
                _say({"report": {
                    "delivered": [(m, to.decode()) for m, to in self.delivered],
                    "seen": {p.peer_id: list(p.seen.items()) for p in self.peers},
                    "statuses": {k.decode(): n for k, n in self.statuses.items()},
                    "errors": self.errors,
                    "pushes": self.pushes,
                }})
                self.delivered, self.statuses, self.errors, self.pushes = [], {}, {}, 0
            elif cmd["cmd"] == "quit":
                self.quit = True

    def serve(self) -> None:
        """Register, say ready, then follow the driver's commands until it says quit."""
        self.register_all()
        _say({"ready": {"peers": [p.peer_id for p in self.peers],
                        "agents": [p.agent_pid for p in self.peers], "pid": os.getpid()}})
        while not self.quit:
            self.turn(self.timeout())


def worker_main(args: argparse.Namespace) -> None:
    """One load-generator process holding ``args.peers`` simulated peers."""
    agents = fork_agents(args.socket, args.peers)
    gc.disable()  # the hot loop makes no reference cycles: collections would be pure overhead
    try:
        LoadGenerator(args.index, agents).serve()
    except Exception as exc:  # report, then end: the main process cleans up
        _say({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        for _, pid in agents:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def main(argv: list[str]) -> None:
    """Run one load generator (the arguments ``broker_bench.py`` gives it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True, help="the broker's UNIX socket")
    parser.add_argument("--peers", type=int, required=True, help="simulated peers in this process")
    parser.add_argument("--index", type=int, default=0, help="this generator's number")
    worker_main(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
