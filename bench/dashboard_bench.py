"""Dashboard benchmark: what open dashboard pages cost the broker under message traffic.

    python bench/dashboard_bench.py [--pages 5] [--rate 1000] [--duration 10]

It starts a real broker subprocess and the simulated peers of ``broker_bench.py`` (real
UNIX sockets, real wire, durable sends answered after the recipient's push), then runs
the same loads twice on the same broker: first with no page open, then with ``--pages``
pages connected to the dashboard's event stream (each redeemed from its own
``claude-peers dashboard --json`` link, read as a browser would, by a separate reader
process that counts what arrives), alternating (``--rounds``) so that other work on the
machine weighs on both alike. For each it prints:

1. capacity: the highest durable msg/s the broker sustains (closed loop, 32 sends in
   flight per peer), and the fall with pages open (target: under 10%);
2. a steady ``--rate`` msg/s (paced): the broker's CPU per message with and without pages;
3. what the pages received (bytes and events per second, flow lines and lines skipped);
4. in process, without sockets: the CPU time of the broker's event path per message with
   no page and with ``--pages`` pages (the dashboard's own share, which the machine's other
   load does not blur as it blurs wall-clock rates).

Every process started here is ended by its pid.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from support import ROOT, percentile  # first: it puts this checkout and its tests on sys.path
import broker_bench


# =========================================================================================
# In process: what the dashboard's own code costs per message (CPU time, not wall time)
# =========================================================================================


class _NullStore:
    """Just what the broker's event log and the page's health line read."""

    batches = batched_writes = queued_writes = 0

    def add_event(self, *args: Any) -> Any:
        from twisted.internet.defer import succeed

        return succeed(None)


class _Page:
    """A page's request: counts what is written to it."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)


def micro(messages: int, peers: int, pages: int, rate: float = 1000.0) -> dict:
    """CPU seconds per message of the broker's event path without and with ``pages`` pages
    (the same events as real sends emit; the flush timer fired every 0.1 s of event time
    at ``rate`` msg/s: every 100 messages at 1,000 msg/s)."""
    from twisted.internet.task import Clock

    from claudepeers.broker.core import Broker
    from claudepeers.broker.peers import PeerActor
    from claudepeers.broker.records import ONLINE, PeerRecord
    from claudepeers.broker.web.stream import EventStream, Page

    clock = Clock()
    clock.advance(1_800_000_000)
    per_flush = max(1, int(rate / 10))
    store = _NullStore()
    broker = Broker(store, clock, host="bench")
    for n in range(peers):
        record = PeerRecord(id=f"p{n:07d}", host="bench", agent_pid=10_000 + n, agent_start=1.0,
                            client_type="claude-code", name=f"peer-{n}", cwd=f"/work/repo-{n % 8}", git_root=None,
                            git_common_dir=None, branch="main", tty=None, summary="working on it", state=ONLINE,
                            registered_at=1.0, last_seen=1.0)
        broker.actors[record.id] = PeerActor(record, store, clock, 2.0, 0)

    def run() -> float:
        began = time.process_time()
        for n in range(messages):
            sender, recipient = broker.actors[f"p{n % peers:07d}"], broker.actors[f"p{(n + 1) % peers:07d}"]
            broker.emit("message", sender.id, f"{sender.name} -> {recipient.name}: shown", message_id=n,
                        to_id=recipient.id)
            if n % per_flush == per_flush - 1:
                clock.advance(0.1)
        return (time.process_time() - began) / messages

    baseline = run()
    stream = EventStream(broker, clock)
    written = [_Page() for _ in range(pages)]
    for request in written:
        stream.pages[Page(request, stream)] = None
    broker.events.watch(stream)
    with_pages = run()
    return {"baseline": baseline, "pages": with_pages, "bytes": sum(page.written for page in written) / messages}


def redeem(url: str) -> tuple[int, str]:
    """Open a one-time link as a browser would: (port, cookie) from its redirect."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/" + path)
    answer = connection.getresponse()
    answer.read()
    cookie = answer.getheader("set-cookie", "").split(";")[0]
    connection.close()
    if answer.status != 303 or not cookie:
        raise RuntimeError(f"the link was not accepted: {answer.status}")
    return int(port), cookie


def reader_main(args: argparse.Namespace) -> None:
    """The page reader process: opens and closes the pages' streams when told, counts what
    arrives, reports its counts when told (one JSON line per command on stdout)."""
    specs = [spec.split("|") for spec in args.streams.split(",")]
    streams: list[socket.socket] = []
    buffers: dict[socket.socket, bytes] = {}
    counts = {"bytes": 0, "events": 0, "flow_items": 0, "skipped": 0}

    def open_all() -> None:
        for port, cookie in specs:
            sock = socket.create_connection(("127.0.0.1", int(port)))
            sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            sock.setblocking(False)
            streams.append(sock)
            buffers[sock] = b""

    def close_all() -> None:
        for sock in streams:
            sock.close()
        streams.clear()
        buffers.clear()

    while True:
        ready, _, _ = select.select([*streams, sys.stdin], [], [])
        for sock in ready:
            if sock is sys.stdin:
                command = sys.stdin.readline().strip()
                if not command:
                    return
                if command == "open":
                    open_all()
                elif command == "close":
                    close_all()
                elif command == "start":
                    counts = dict.fromkeys(counts, 0)
                reply = {"ok": command, "pages": len(streams), **(counts if command == "report" else {})}
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
                continue
            data = sock.recv(1 << 20)
            if not data:
                streams.remove(sock)
                continue
            counts["bytes"] += len(data)
            *blocks, buffers[sock] = (buffers[sock] + data).split(b"\n\n")
            for block in blocks:
                counts["events"] += 1
                if b"event: flow" in block:
                    payload = json.loads(block.split(b"data: ", 1)[1])
                    counts["flow_items"] += len(payload["items"])
                    counts["skipped"] += payload["skipped"]


def open_pages(bench: Any, count: int) -> subprocess.Popen:
    """``count`` links from the CLI, redeemed, read by one reader process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLAUDE_PEER")}
    env.update(HOME=str(bench.socket_path.parent.parent), CLAUDE_PEERS_SOCKET=str(bench.socket_path),
               CLAUDE_PEERS_NO_AUTOSTART="1", PYTHONPATH=str(ROOT))
    specs = []
    for _ in range(count):
        done = subprocess.run([sys.executable, "-m", "claudepeers", "dashboard", "--json"], env=env,
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"claude-peers dashboard failed: {done.stderr}")
        port, cookie = redeem(json.loads(done.stdout)["url"])
        specs.append(f"{port}|{cookie}")
    return subprocess.Popen([sys.executable, __file__, "--reader", "--streams", ",".join(specs)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def tell(reader: subprocess.Popen, command: str) -> dict:
    """Send the reader a command (open, close, start, report); its answer."""
    reader.stdin.write(command + "\n")  # type: ignore[union-attr]
    reader.stdin.flush()  # type: ignore[union-attr]
    return json.loads(reader.stdout.readline())  # type: ignore[union-attr]


def phase(bench: Any, targets: list[str], args: argparse.Namespace, reader: subprocess.Popen, pages: bool) -> dict:
    """Capacity, then a paced load, with the pages' streams open or closed."""
    tell(reader, "open" if pages else "close")
    capacity = bench.load(targets, "closed", args.duration, args.warmup, window=32)
    tell(reader, "start")
    paced = bench.load(targets, "paced", args.duration, 1.0, rate=args.rate)
    received = tell(reader, "report")
    return {"capacity": capacity, "paced": paced, "received": received}


def show(label: str, result: dict) -> None:
    """Print one phase."""
    cap, paced = result["capacity"], result["paced"]
    print(f"   {label}: capacity {cap['rate']:,.0f} msg/s (broker CPU {cap['broker_cpu']:.0f}%); "
          f"paced {paced['rate']:,.0f} msg/s: broker CPU {paced['broker_cpu']:.1f}% "
          f"({1e4 * paced['broker_cpu'] / max(paced['rate'], 1):.0f} us per message), "
          f"p50 {1000 * percentile(paced['latencies'], 0.5):.2f} ms, "
          f"p99 {1000 * percentile(paced['latencies'], 0.99):.2f} ms")
    for name in ("capacity", "paced"):
        integrity = result[name]["integrity"]
        if integrity["lost"] or integrity["duplicated"]:
            print(f"      {name}: INTEGRITY lost {integrity['lost']} duplicated {integrity['duplicated']}")


def mean(values: list[float]) -> float:
    """The arithmetic mean."""
    return sum(values) / len(values)


def main_bench(args: argparse.Namespace) -> int:
    """Alternating phases without and with pages on one broker; the comparison."""
    # broker_bench's Bench reads its own options too: the engine (SQLite here) among them.
    for name, default in (("postgres", False), ("db_dsn", None), ("skip_idle", True), ("idle_duration", 0.0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    bench = broker_bench.Bench(args)
    reader = None
    try:
        print(f"claude-peers dashboard benchmark ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores)")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        bench.start_broker()
        ready = bench.start_workers(args.workers, broker_bench._split(args.peers, args.workers))
        targets = [peer for info in ready for peer in info["peers"]]
        reader = open_pages(bench, args.pages)
        print(f"{args.peers} simulated peers in {args.workers} processes; {args.duration:g} s windows; "
              f"{args.rounds} rounds, each without and then with {args.pages} pages open")
        results: dict[bool, list[dict]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for pages in (False, True):
                result = phase(bench, targets, args, reader, pages)
                results[pages].append(result)
                show(f"round {round_ + 1}, {'%d pages open' % args.pages if pages else 'no page open'}", result)
                if pages:
                    got = result["received"]
                    print(f"      the pages received {got['bytes'] / args.duration / 1024:,.0f} KiB/s in "
                          f"{got['events'] / args.duration:,.0f} events/s ({got['flow_items'] / args.duration:,.0f} "
                          f"flow lines/s listed, {got['skipped'] / args.duration:,.0f}/s counted as skipped), "
                          f"all pages together")
        capacity = {pages: mean([r["capacity"]["rate"] for r in rs]) for pages, rs in results.items()}
        saturated = {pages: mean([r["capacity"]["broker_cpu"] / max(r["capacity"]["rate"], 1) for r in rs])
                     for pages, rs in results.items()}
        per_message = {pages: mean([r["paced"]["broker_cpu"] / max(r["paced"]["rate"], 1) for r in rs])
                       for pages, rs in results.items()}
        fall = 100 * (1 - capacity[True] / capacity[False])
        print(f"   mean capacity: {capacity[False]:,.0f} msg/s without pages, {capacity[True]:,.0f} with "
              f"{args.pages}: falls {fall:.1f}% (target < 10%: {'met' if fall < 10 else 'missed'})")
        print(f"   broker CPU per message at {args.rate:,.0f} msg/s: {1e4 * per_message[False]:.0f} us without pages, "
              f"{1e4 * per_message[True]:.0f} us with ({100 * (per_message[True] / per_message[False] - 1):+.1f}%)")
        print(f"   broker CPU per message at saturation: {1e4 * saturated[False]:.0f} us without pages, "
              f"{1e4 * saturated[True]:.0f} us with: a broker with a core of its own would fall "
              f"{100 * (1 - saturated[False] / saturated[True]):.1f}%")
        for rate in (args.rate, 10 * args.rate):
            cost = micro(args.micro_messages, args.peers, args.pages, rate)
            extra = cost["pages"] - cost["baseline"]
            print(f"   in process at {rate:,.0f} msg/s ({args.micro_messages:,} message events, {args.peers} peers): "
                  f"the event path costs {1e6 * cost['baseline']:.2f} us per message with no page open, "
                  f"{1e6 * cost['pages']:.2f} us with {args.pages} pages ({1e6 * extra:.2f} us more: "
                  f"{100 * extra * rate:.2f}% of a core; {cost['bytes']:.0f} bytes written per message), "
                  f"{100 * extra / (1e-2 * saturated[False]):.1f}% of the broker's {1e4 * saturated[False]:.0f} us "
                  "per message")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        bench.cleanup()


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0, help="the paced load, msg/s")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternations without and with pages")
    parser.add_argument("--micro-messages", type=int, default=200_000, help="events of the in-process part")
    parser.add_argument("--micro-only", action="store_true", help="only the in-process part")
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--streams", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    if options.reader:
        reader_main(options)
    elif options.micro_only:
        result = micro(options.micro_messages, options.peers, options.pages, options.rate)
        print(json.dumps({key: round(value * 1e6, 3) if key != "bytes" else round(value)
                          for key, value in result.items()}))
    else:
        sys.exit(main_bench(options))
