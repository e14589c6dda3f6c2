"""The Store alone, on SQLite or PostgreSQL: durable messages per second without the broker's wire.

    .venv/bin/python bench/store_bench.py [--postgres] [--seconds 8] [--peers 64]

Each of ``--peers`` simulated recipients loops: store 8 messages (one ``add_message`` each),
wait for their commit, acknowledge them (one ``acknowledge``), wait for that commit. Every
write goes through the group commit as the broker's do, so this measures the store's two
commits per message and its batching, on one Twisted reactor and adbapi's one thread. With
``--postgres`` the database is a server of the bench's own (tests/pg_server.py: initdb in a
temporary directory, fsync and synchronous_commit on, a UNIX socket, stopped by pid at the end);
otherwise a SQLite file in a temporary directory. Prints msg/s, batches and their mean size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str]) -> int:
    """Run the benchmark; print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (a server of the bench's own)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peers", type=int, default=64)
    args = parser.parse_args(argv)

    from twisted.internet import defer, reactor

    from claudepeers.broker.records import NewMessage
    from claudepeers.broker.storage import Store, open_pool, prepare

    base = Path(tempfile.mkdtemp(prefix="cp-store-", dir="/tmp"))
    server: Any = None
    if args.postgres:
        from pg_server import PostgresServer

        server = PostgresServer(durable=True).start()
        target = server.dsn(server.fresh_database())
    else:
        target = str(base / "peers.db")
    prepare(target)
    store = Store(open_pool(target))
    sizes: list[int] = []
    flush = store._flush

    def counted(checked: bool = False) -> None:
        sizes.append(len(store._pending))
        flush(checked)

    store._flush = counted  # type: ignore[method-assign]
    done = [0]
    outcome: dict[str, Any] = {}

    @defer.inlineCallbacks
    def peer(number: int, until: float) -> Any:
        to_id = f"r{number:07d}"
        while time.monotonic() < until:
            new = NewMessage("s0000001", "s", "", "/", "codex", True, to_id, "x" * 99, time.time())
            stored = yield defer.gatherResults([store.add_message(new) for _ in range(8)])
            yield store.acknowledge(to_id, [m.id for m in stored], time.time())
            done[0] += 8

    @defer.inlineCallbacks
    def run() -> Any:
        try:
            began = time.monotonic()
            cpu = time.process_time()
            yield defer.gatherResults([peer(n, began + args.seconds) for n in range(args.peers)])
            outcome["seconds"] = time.monotonic() - began
            outcome["cpu"] = time.process_time() - cpu
        finally:
            yield store.close()
            reactor.stop()

    print(f"claude-peers store benchmark ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"database: {'PostgreSQL (own server, fsync on)' if server else 'SQLite (WAL, synchronous=NORMAL)'}; "
          f"{args.peers} recipients, each: 8 add_message, then 1 acknowledge, in a loop for {args.seconds:.0f} s")
    reactor.callWhenRunning(run)
    try:
        reactor.run()
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(base, ignore_errors=True)
    rate = done[0] / outcome["seconds"]
    print(f"{rate:,.0f} durable msg/s (stored and acknowledged, 2 commits each); {len(sizes):,} batches of "
          f"{statistics.fmean(sizes) if sizes else 0:.0f} writes on average; "
          f"{1e6 * outcome['cpu'] / max(done[0], 1):.0f} us of this process's CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
