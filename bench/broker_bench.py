"""Broker benchmark: many simulated peers on the real UNIX socket, through the real wire.

    .venv/bin/python bench/broker_bench.py [--quick] [--workers N] [--peers N] ...
    .venv/bin/python bench/broker_bench.py --postgres [--skip-idle]   # the store on PostgreSQL

With ``--postgres`` the broker's database is PostgreSQL (``CLAUDE_PEERS_DB``): a server of the
bench's own, started from the system's binaries (tests/pg_server.py) in a temporary directory
with fsync and synchronous_commit on (a commit is on disk before it is answered, as with
SQLite), a fresh database per broker; or ``--db-dsn DSN`` for a server that already runs.

It starts a real broker subprocess (``python -m claudepeers.broker.main``) in a short
temporary directory and measures, through AMP on the broker's UNIX socket:

1. durable messages per second: simulated peers in several load-generator processes send
   to each other, each keeping a fixed number of sends in flight (8, then 32: two offered
   loads, ``--windows``); a message counts when its sender's ``Send`` answer arrives with
   status ``delivered``, which the broker gives only after the message is committed to
   SQLite and the recipient's ``Deliver`` responder answered ``shown=True``. Afterwards
   every recipient must have seen every delivered id exactly once. The broker's capacity
   is the highest rate of the runs (at more load it batches more: commits and pushes);
2. p50/p99 latency from calling ``Send`` to its ``delivered`` answer at a steady, paced load;
3. CPU% and RSS of the broker process with 1,000 connected idle peers (a fresh broker),
   sampled over a period that includes its 10-second reaping (psutil checks of every agent).

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # the project, and amp_poller next to this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import psutil  # noqa: E402

import amp_poller  # noqa: E402

from claudepeers.wire import box as ampbox  # noqa: E402

BODY = "benchmark message: " + "x" * 80  # about 100 bytes, a short agent-to-agent note
SLEEP = shutil.which("sleep") or "/bin/sleep"


# =========================================================================================
# Load generator (a subprocess: `broker_bench.py --worker ...`); JSON lines on stdin/stdout
# =========================================================================================


def _say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fork_agents(socket_path: str, count: int) -> list[tuple[socket.socket, int]]:
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
    agents = _fork_agents(args.socket, args.peers)
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


# =========================================================================================
# The orchestrating process
# =========================================================================================


class Bench:
    """Owns the temporary directory and every process it starts (ended by pid)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
        self.broker: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.agent_pids: list[int] = []
        self.runs = 0
        self.pg: Any = None
        if args.postgres and not args.db_dsn:
            sys.path.insert(0, str(ROOT / "tests"))
            from pg_server import PostgresServer

            self.pg = PostgresServer(durable=True).start()

    # --- processes -----------------------------------------------------------------------

    def start_broker(self) -> psutil.Process:
        self.runs += 1
        run = self.base / f"r{self.runs}"
        run.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PEER")}
        env.update(
            HOME=str(run),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            CLAUDE_PEERS_NO_AUTOSTART="1",
            # Raised so that the limits do not throttle the benchmark:
            CLAUDE_PEERS_MESSAGES_PER_MINUTE="100000000",
            CLAUDE_PEERS_MAX_UNREAD="100000000",
            # Its dummy agents connect every peer first and register 50 at a time afterwards, so
            # up to 1,000 connections wait unregistered for many seconds: room for them.
            CLAUDE_PEERS_MAX_UNBOUND="100000",
            CLAUDE_PEERS_UNBOUND_SECONDS="600",
        )
        socket_path = run / "run" / "cp.sock"
        database = ["--db", str(run / "peers.db")]
        if self.args.db_dsn:
            env["CLAUDE_PEERS_DB"], database = self.args.db_dsn, []
        elif self.pg is not None:
            env["CLAUDE_PEERS_DB"], database = self.pg.dsn(self.pg.fresh_database()), []
        log = open(run / "broker.log", "ab")
        self.broker = subprocess.Popen(
            [sys.executable, "-m", "claudepeers.broker.main", "--socket", str(socket_path), *database],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(run),
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.broker.poll() is not None:
                raise RuntimeError(f"broker exited ({self.broker.returncode}); see {run / 'broker.log'}")
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(socket_path))
                break
            except OSError:
                time.sleep(0.02)  # waiting for another process to listen
            finally:
                probe.close()
        else:
            raise RuntimeError("the broker did not start listening")
        self.socket_path = socket_path
        return psutil.Process(self.broker.pid)

    def stop_broker(self) -> None:
        if self.broker is None:
            return
        if self.broker.poll() is None:
            self.broker.send_signal(signal.SIGTERM)
            try:
                self.broker.wait(20)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
        self.broker = None

    def start_workers(self, count: int, peers_each: list[int]) -> list[dict]:
        self.workers = []
        for index in range(count):
            self.workers.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", "--socket", str(self.socket_path),
                 "--peers", str(peers_each[index]), "--index", str(index)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
            ))
        ready = [self.read(w, "ready") for w in self.workers]
        for info in ready:
            self.agent_pids += info["agents"]
        return ready

    def read(self, worker: subprocess.Popen, key: str) -> Any:
        line = worker.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"load generator {worker.pid} exited ({worker.poll()})")
        message = json.loads(line)
        if key not in message:
            raise RuntimeError(f"load generator {worker.pid}: {message}")
        return message[key]

    def tell(self, worker: subprocess.Popen, cmd: dict) -> None:
        worker.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        worker.stdin.flush()  # type: ignore[union-attr]

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                try:
                    self.tell(worker, {"cmd": "quit"})
                except OSError:
                    pass
        for worker in self.workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        # Dummy agents die with their generator (PDEATHSIG); make sure, by pid.
        for pid in self.agent_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.workers = []
        self.agent_pids = []

    def cleanup(self) -> None:
        try:
            self.stop_workers()
        finally:
            self.stop_broker()
            if self.pg is not None:
                self.pg.close()
            shutil.rmtree(self.base, ignore_errors=True)

    # --- phases --------------------------------------------------------------------------

    def load(self, targets: list[str], mode: str, duration: float, warmup: float,
             window: int = 0, rate: float = 0.0) -> dict:
        """Run one load phase on every worker; CPU of broker and workers over the window."""
        start = time.time() + 0.5
        share = rate / len(self.workers) if rate else 0.0
        for worker in self.workers:
            self.tell(worker, {"cmd": "load", "mode": mode, "targets": targets, "start": start,
                               "warmup": warmup, "duration": duration, "window": window, "rate": share})
        broker = psutil.Process(self.broker.pid)  # type: ignore[union-attr]
        procs = [psutil.Process(w.pid) for w in self.workers]
        time.sleep(max(0.0, start + warmup - time.time()))
        c0 = [_cpu(p) for p in [broker, *procs]]
        s0 = [p.cpu_times().system for p in [broker, *procs]]
        time.sleep(max(0.0, start + warmup + duration - time.time()))
        c1 = [_cpu(p) for p in [broker, *procs]]
        s1 = [p.cpu_times().system for p in [broker, *procs]]
        drained = [self.read(w, "drained") for w in self.workers]
        for worker in self.workers:
            self.tell(worker, {"cmd": "report"})
        reports = [self.read(w, "report") for w in self.workers]
        latencies = sorted(x for d in drained for x in d["latencies"])
        counted = sum(d["counted"] for d in drained)
        return {
            "counted": counted,
            "rate": counted / duration,
            "latencies": latencies,
            "broker_cpu": 100 * (c1[0] - c0[0]) / duration,
            "broker_sys": 100 * (s1[0] - s0[0]) / duration,
            "workers_cpu": 100 * sum(b - a for a, b in zip(c0[1:], c1[1:])) / duration,
            "workers_sys": 100 * sum(b - a for a, b in zip(s0[1:], s1[1:])) / duration,
            "integrity": _integrity(reports),
        }


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _integrity(reports: list[dict]) -> dict:
    """Every delivered id seen exactly once by its recipient; nothing seen twice anywhere."""
    seen: dict[str, dict[int, int]] = {}
    for report in reports:
        for peer_id, pairs in report["seen"].items():
            seen[peer_id] = {int(k): v for k, v in pairs}
    delivered = [tuple(pair) for report in reports for pair in report["delivered"]]
    lost = sum(1 for message_id, to_id in delivered if seen.get(to_id, {}).get(message_id, 0) == 0)
    duplicated = sum(1 for counts in seen.values() for n in counts.values() if n > 1)
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for report in reports:
        for key, n in report["statuses"].items():
            statuses[key] = statuses.get(key, 0) + n
        for key, n in report["errors"].items():
            errors[key] = errors.get(key, 0) + n
    ids = [message_id for message_id, _ in delivered]
    return {"delivered": len(delivered), "distinct": len(set(ids)), "lost": lost,
            "duplicated": duplicated, "statuses": statuses, "errors": errors,
            "pushes": sum(report["pushes"] for report in reports)}


def _report_throughput(tput: dict, window: int, args: argparse.Namespace) -> bool:
    """Print one throughput run; True when nothing was lost or duplicated."""
    integ = tput["integrity"]
    print(f"   {window} in flight per peer ({window * args.peers:,} in all): {tput['rate']:,.0f} msg/s   "
          f"({tput['counted']:,} delivered in {args.duration:g} s after {args.warmup:g} s warm-up)")
    per_message = 1e4 * tput["broker_cpu"] / max(tput["rate"], 1)  # microseconds
    print(f"      CPU during the window: broker {tput['broker_cpu']:.0f}% of a core "
          f"({tput['broker_sys']:.0f}% in the kernel), "
          f"load generators {tput['workers_cpu']:.0f}% ({tput['workers_sys']:.0f}% in the kernel; 2 cores = 200%)")
    print(f"      broker CPU per delivered message {per_message:.0f} us "
          f"(a broker with a whole core to itself: at most ~{1e6 / per_message:,.0f} msg/s)")
    print(f"      load-generator CPU per delivered message {1e4 * tput['workers_cpu'] / max(tput['rate'], 1):.0f} us "
          "(all simulated peers' side: hand-written AMP on epoll, no Twisted)")
    print(f"      Deliver pushes: {integ['pushes']:,} ({integ['delivered'] / max(integ['pushes'], 1):.1f} messages "
          "per push; the broker batches what arrives while a push is in flight)")
    print(f"      latency under this saturating load: p50 {1000 * _pct(tput['latencies'], 0.5):.1f} ms, "
          f"p99 {1000 * _pct(tput['latencies'], 0.99):.1f} ms")
    print(f"      integrity: {integ['delivered']:,} delivered answers, {integ['distinct']:,} distinct ids, "
          f"lost {integ['lost']}, duplicated {integ['duplicated']}, statuses {integ['statuses']}, "
          f"errors {integ['errors'] or 'none'}")
    return integ["lost"] == 0 and integ["duplicated"] == 0 and integ["distinct"] == integ["delivered"]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[index]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main_bench(args: argparse.Namespace) -> int:
    bench = Bench(args)
    ok = True
    try:
        print(f"claude-peers broker benchmark  ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
              f"{os.cpu_count()} cores, Python {sys.version.split()[0]})")
        print(f"load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(other work on the machine competes for the same 2 cores)")
        engine = "PostgreSQL" if args.postgres or args.db_dsn else "SQLite"
        if bench.pg is not None:
            engine += f" (the bench's own server, {bench.pg.bin.parent.name}, fsync on, synchronous_commit on)"
        print(f"database: {engine}")
        print(f"temp dir {bench.base}; {args.workers} load-generator processes, {args.peers} peers, "
              f"windows {', '.join(map(str, args.windows))} sends in flight per peer, body {len(BODY)} bytes")

        # --- 1 and 2: throughput, then latency at a steady load (same broker and peers) ---
        bench.start_broker()
        ready = bench.start_workers(args.workers, _split(args.peers, args.workers))
        targets = [peer for info in ready for peer in info["peers"]]
        print()
        print("1. durable messages per second (Send -> committed -> Deliver shown=True -> Send answered 'delivered')")
        print("   at each offered load in turn (sends in flight per peer x peers); the broker's capacity is")
        print("   the highest rate it sustains")
        rates = []
        for window in args.windows:
            tput = bench.load(targets, "closed", args.duration, args.warmup, window=window)
            ok &= _report_throughput(tput, window, args)
            rates.append(tput["rate"])
        best = max(rates)
        print(f"   capacity: {best:,.0f} msg/s (target >= 10,000: {'met' if best >= 10_000 else 'missed'})")

        lat = bench.load(targets, "paced", args.lat_duration, 1.0, rate=args.rate)
        integ2 = lat["integrity"]
        print()
        print(f"2. latency Send -> 'delivered' at a steady {args.rate:,.0f} msg/s (paced, {args.peers} peers)")
        print(f"   p50 {1000 * _pct(lat['latencies'], 0.5):.2f} ms   p99 {1000 * _pct(lat['latencies'], 0.99):.2f} ms   "
              f"(n={len(lat['latencies']):,}, achieved {lat['rate']:,.0f} msg/s, "
              f"mean {1000 * statistics.fmean(lat['latencies']) if lat['latencies'] else float('nan'):.2f} ms, "
              f"max {1000 * (lat['latencies'][-1] if lat['latencies'] else float('nan')):.1f} ms)")
        print(f"   CPU: broker {lat['broker_cpu']:.0f}% of a core "
              f"({1e4 * lat['broker_cpu'] / max(lat['rate'], 1):.0f} us per message), "
              f"load generators {lat['workers_cpu']:.0f}% "
              f"({1e4 * lat['workers_cpu'] / max(lat['rate'], 1):.0f} us per message)")
        print(f"   integrity: lost {integ2['lost']}, duplicated {integ2['duplicated']}, "
              f"statuses {integ2['statuses']}, errors {integ2['errors'] or 'none'}")
        ok &= integ2["lost"] == 0 and integ2["duplicated"] == 0
        bench.stop_workers()
        bench.stop_broker()
        if args.skip_idle:
            print()
            print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print("integrity:", "OK" if ok else "FAILED")
            return 0 if ok else 1

        # --- 3: a fresh broker with 1,000 connected idle peers ---
        proc = bench.start_broker()
        rss_empty = proc.memory_info().rss
        began = time.monotonic()
        bench.start_workers(args.idle_workers, _split(args.idle_peers, args.idle_workers))
        connect_time = time.monotonic() - began
        rss_connected = proc.memory_info().rss
        time.sleep(args.settle)
        samples = []
        c0, w0 = _cpu(proc), time.monotonic()
        end = w0 + args.idle_duration
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            samples.append(proc.memory_info().rss)
        c1, w1 = _cpu(proc), time.monotonic()
        cpu = 100 * (c1 - c0) / (w1 - w0)
        rss_max = max(samples)
        print()
        print(f"3. {args.idle_peers:,} connected idle peers (fresh broker; {args.idle_workers} holder processes)")
        print(f"   CPU {cpu:.2f}% of a core over {w1 - w0:.0f} s (includes the 10 s reaping; target < 1%)")
        print(f"   RSS {rss_max / 2**20:.1f} MB max over the window (empty broker {rss_empty / 2**20:.1f} MB, "
              f"just after connecting {rss_connected / 2**20:.1f} MB; target <= 150 MB)")
        print(f"   connecting and registering them took {connect_time:.1f} s")
        print()
        print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("integrity:", "OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        bench.cleanup()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (a smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--peers", type=int, default=64, help="simulated peers sending to each other")
    parser.add_argument("--windows", default="8,32",
                        help="sends in flight per peer for the throughput runs, comma-separated (one run each)")
    parser.add_argument("--duration", type=float, default=None, help="throughput window, seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=500.0, help="paced load for the latency phase, msg/s")
    parser.add_argument("--lat-duration", type=float, default=None)
    parser.add_argument("--idle-peers", type=int, default=1000)
    parser.add_argument("--idle-workers", type=int, default=4)
    parser.add_argument("--idle-duration", type=float, default=None)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--postgres", action="store_true",
                        help="the broker's database on PostgreSQL (a server of the bench's own, fsync on)")
    parser.add_argument("--db-dsn", default=None, help="the broker's database: this PostgreSQL DSN (a server that runs)")
    parser.add_argument("--skip-idle", action="store_true", help="leave out phase 3 (1,000 idle peers)")
    # internal: run as a load generator
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.windows = [int(part) for part in str(args.windows).split(",") if part.strip()]
    if args.duration is None:
        args.duration = 4.0 if args.quick else 10.0
    if args.lat_duration is None:
        args.lat_duration = 4.0 if args.quick else 10.0
    if args.idle_duration is None:
        args.idle_duration = 12.0 if args.quick else 30.0
    return args


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    if options.worker:
        worker_main(options)
    else:
        sys.exit(main_bench(options))
