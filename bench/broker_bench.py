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
   sampled over a whole number of its 10-second reaps (a check of every agent process, most
   of the idle cost): a window of 12 s held one reap or two depending on when it began,
   which read as 0.33% or 0.67% for the same broker.

The simulated peers live in load-generator processes (``bench/broker_load.py``: how each
passes the broker's identity check honestly, and why they speak AMP without Twisted).
"""

from __future__ import annotations

import argparse
import json
import os
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

from support import ROOT, percentile  # first: it puts this checkout on sys.path

import psutil

from broker_load import BODY

#: The broker's reap interval (Limits.reap_interval_seconds): the idle window is a multiple.
REAP_SECONDS = 10.0


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
                [sys.executable, str(ROOT / "bench" / "broker_load.py"), "--socket", str(self.socket_path),
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
    print(f"      latency under this saturating load: p50 {1000 * percentile(tput['latencies'], 0.5):.1f} ms, "
          f"p99 {1000 * percentile(tput['latencies'], 0.99):.1f} ms")
    print(f"      integrity: {integ['delivered']:,} delivered answers, {integ['distinct']:,} distinct ids, "
          f"lost {integ['lost']}, duplicated {integ['duplicated']}, statuses {integ['statuses']}, "
          f"errors {integ['errors'] or 'none'}")
    return integ["lost"] == 0 and integ["duplicated"] == 0 and integ["distinct"] == integ["delivered"]


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
        print(f"   p50 {1000 * percentile(lat['latencies'], 0.5):.2f} ms   p99 {1000 * percentile(lat['latencies'], 0.99):.2f} ms   "
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
        print(f"   CPU {cpu:.2f}% of a core over {w1 - w0:.0f} s "
              f"({(w1 - w0) / REAP_SECONDS:.0f} reaps of every agent, one per 10 s; target < 1%)")
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
    parser.add_argument("--idle-duration", type=float, default=None,
                        help="idle window, seconds (keep it a multiple of the broker's 10 s reap)")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--postgres", action="store_true",
                        help="the broker's database on PostgreSQL (a server of the bench's own, fsync on)")
    parser.add_argument("--db-dsn", default=None, help="the broker's database: this PostgreSQL DSN (a server that runs)")
    parser.add_argument("--skip-idle", action="store_true", help="leave out phase 3 (1,000 idle peers)")
    args = parser.parse_args(argv)
    args.windows = [int(part) for part in str(args.windows).split(",") if part.strip()]
    if args.duration is None:
        args.duration = 4.0 if args.quick else 10.0
    if args.lat_duration is None:
        args.lat_duration = 4.0 if args.quick else 10.0
    if args.idle_duration is None:
        args.idle_duration = 20.0 if args.quick else 30.0
    return args


if __name__ == "__main__":
    sys.exit(main_bench(parse(sys.argv[1:])))
