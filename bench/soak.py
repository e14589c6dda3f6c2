"""Soak: real bridges and simulated peers exchanging traffic through one real broker for a while.

    .venv/bin/python bench/soak.py [--bridges 50] [--sims 1000] [--seconds 600]
                                   [--bridge-rate 1] [--sim-rate 200] [--window SECONDS] [--replot JSON]

What runs:
- one broker (``python -m claudepeers.broker.main``) with its UNIX socket and TCP (token);
- ``--bridges`` real bridges (``python -m claudepeers.bridge.main``), each the child of its own
  stand-in ``claude`` agent started with the channels flag (tests/fake_agent.py), driven
  over their stdin/stdout by this process (tests/raw_mcp.py): they send with the
  ``send_message`` tool and receive ``notifications/claude/channel``;
- ``--sims`` simulated peers: AMP clients on the broker's TCP listener, run by child processes
  of this script (``--role sims``, Twisted, 500 peers each), each peer registered as one thread
  of its child process (over TCP the broker accepts only the agent whose process tree holds the
  connection); they send with ``Send`` and show every push at once.

Every message carries a unique key and its send time. A message counts as sent when its Send
(or send_message) was answered without error; delivered when its recipient received it (a
channel notification, or a push to a simulated peer); lost when sent but never delivered by
the end of a drain period; duplicated when a recipient received it more than once. Latency is
receive time minus send time, reported per time window. The broker's RSS and open file
descriptors are sampled at the start (everyone registered), every window and at the end.

Writes docs/soak-latency.png (a pure-Python PNG: p50 and p99 latency per window, and RSS) and
docs/soak-last.json (every figure printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from support import ROOT, percentile  # first: it puts this checkout and its tests on sys.path
from soak_plot import write_png

KEY = re.compile(r"soak\|([^|\s]+)\|([0-9.]+)")


# --- the simulated peers (a child process) -------------------------------------------------------


def run_sims(options: argparse.Namespace) -> int:
    """Child role: register ``--count`` peers over TCP, then send and receive until told to stop."""
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.task import LoopingCall
    from twisted.protocols import amp

    from claudepeers.wire import commands as wire

    received: list[tuple[str, str, float]] = []  # (recipient, key, at)
    sent: list[tuple[str, str, float, bool]] = []  # (sender, key, at, ok)
    import psutil

    # Over TCP the broker accepts only an agent whose process tree holds the connection: this
    # process is the agent, and each simulated peer one thread of it, as a Codex app-server's are.
    agent = (os.getpid(), psutil.Process().create_time())

    class SimPeer(amp.AMP):
        name = ""

        @wire.Deliver.responder
        def deliver(self, messages: list[dict[str, Any]]) -> dict[str, list[bool]]:
            for message in messages:
                match = KEY.search(message.get("body", ""))
                if match:
                    received.append((self.name, match.group(1), time.time()))
            return {"shown": [True] * len(messages)}

    peers: list[SimPeer] = []
    token = Path(options.token_file).read_text().strip()
    targets: list[str] = []
    state = {"sending": False, "seq": 0}

    @inlineCallbacks
    def connect_all() -> Any:
        for index in range(options.count):
            peer = SimPeer()
            peer.name = f"{options.prefix}{index}"
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", options.port, timeout=30), peer)
            yield peer.callRemote(wire.Authenticate, token=token)
            yield peer.callRemote(wire.Register, agent_pid=agent[0], agent_start=agent[1], thread_id=peer.name,
                                  client_type="codex", cwd=f"/soak/{peer.name}", name=peer.name, delivery="push")
            peers.append(peer)
        print("READY " + json.dumps([p.name for p in peers]), flush=True)

    def send_some() -> None:
        if not state["sending"] or not targets:
            return
        for _ in range(max(1, int(options.rate * 0.1))):
            sender = random.choice(peers)
            target = random.choice(targets)
            if target == sender.name:
                continue
            state["seq"] += 1
            key = f"{sender.name}:{state['seq']}"
            at = time.time()
            d = sender.callRemote(wire.Send, to=target, body=f"soak|{key}|{at:.6f}")
            d.addCallbacks(lambda _r, s=sender.name, k=key, a=at: sent.append((s, k, a, True)),
                           lambda _f, s=sender.name, k=key, a=at: sent.append((s, k, a, False)))

    def read_commands() -> None:
        # stdin: "GO <json targets>", "HUSH" (stop sending), "STOP" (write results, exit)
        for line in sys.stdin:
            word, _, rest = line.strip().partition(" ")
            if word == "GO":
                reactor.callFromThread(lambda r=rest: (targets.extend(json.loads(r)), state.update(sending=True)))
            elif word == "HUSH":
                reactor.callFromThread(state.update, sending=False)
            elif word == "STOP":
                break
        reactor.callFromThread(finish)

    def finish() -> None:
        Path(options.out).write_text(json.dumps({"sent": sent, "received": received}))
        reactor.stop()

    sender_loop = LoopingCall(send_some)
    reactor.callWhenRunning(lambda: connect_all().addCallback(lambda _: sender_loop.start(0.1))
                            .addErrback(lambda f: (print("FAILED " + f.getErrorMessage(), flush=True), finish())))
    threading.Thread(target=read_commands, daemon=True).start()
    reactor.run()
    return 0


# --- the driver ------------------------------------------------------------------------------------


def broker_figures(pid: int) -> dict[str, float]:
    """RSS (MiB), open fds and CPU seconds of the broker."""
    import psutil

    process = psutil.Process(pid)
    times = process.cpu_times()
    return {"rss_mib": round(process.memory_info().rss / 2**20, 1), "fds": process.num_fds(),
            "cpu_s": round(times.user + times.system, 2), "at": time.time()}



def main() -> int:
    """Run the soak and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridges", type=int, default=50)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--bridge-rate", type=float, default=1.0, help="messages per second per bridge")
    parser.add_argument("--sim-rate", type=float, default=200.0, help="messages per second from all simulated peers")
    parser.add_argument("--window", type=float, default=None, help="seconds per reporting window (default seconds/10)")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for the last deliveries")
    parser.add_argument("--png", default=str(ROOT / "docs" / "soak-latency.png"))
    parser.add_argument("--json", default=str(ROOT / "docs" / "soak-last.json"))
    parser.add_argument("--replot", metavar="JSON", help="only redraw the PNG from a report written earlier")
    parser.add_argument("--role", default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="sim", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role == "sims":
        return run_sims(options)
    if options.replot:
        write_png(Path(options.png), json.loads(Path(options.replot).read_text()))
        return 0
    return drive(options)


def drive(options: argparse.Namespace) -> int:
    """Start everything, run the traffic, collect and report; end every process by pid."""
    from bridge_support import FakeAgent
    from conftest import BrokerProcess, broker_env
    from raw_mcp import StdioBridge

    window = options.window or max(10.0, options.seconds / 10)
    base = Path(tempfile.mkdtemp(prefix="cp-soak-", dir="/tmp"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = broker_env(base, CLAUDE_PEERS_MESSAGES_PER_MINUTE="1000000", CLAUDE_PEERS_MAX_UNREAD="1000000")
    broker = BrokerProcess(base, env, args=["--tcp", str(port)])
    agents: list[FakeAgent] = []
    bridges: list[StdioBridge] = []
    children: list[subprocess.Popen] = []
    bridge_sent: list[tuple[str, str, float, bool]] = []
    samples: list[dict[str, float]] = []
    stop_sending = threading.Event()
    report: dict[str, Any] = {}
    try:
        broker.start()
        assert broker.process is not None
        broker_pid = broker.process.pid
        started = time.time()
        per_child = 500
        sim_names: list[str] = []
        for index, first in enumerate(range(0, options.sims, per_child)):
            count = min(per_child, options.sims - first)
            child = subprocess.Popen(
                [sys.executable, __file__, "--role", "sims", "--port", str(port), "--token-file",
                 str(broker.settings.token_path), "--count", str(count), "--prefix", f"sim{index}x",
                 "--rate", str(options.sim_rate * count / max(1, options.sims)), "--out", str(base / f"sims{index}.json")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"simulated peers did not start: {line!r}")
            sim_names += json.loads(line[6:])
        print(f"{len(sim_names)} simulated peers registered in {time.time() - started:.1f} s", flush=True)

        started = time.time()
        for index in range(options.bridges):
            agent = FakeAgent(base, f"br{index}", "claude", base, dict(env), channels=True).start()
            agents.append(agent)
            bridges.append(StdioBridge(agent.socket_path, base / f"br{index}.pid", dict(agent.env), base,
                                       transcript=agent.transcript if agent.channels else None))
        for bridge in bridges:
            bridge.initialize()
        for bridge, agent in zip(bridges, agents):
            # Fifty bridges importing mcp at once on two cores take a while to register.
            answer = bridge.call("whoami", timeout=300)
            assert "result" in answer and not answer["result"].get("isError"), answer
            agent.bridge_pids.append(bridge.bridge_pid())
        bridge_names = [a.name for a in agents]
        print(f"{len(bridges)} bridges registered in {time.time() - started:.1f} s", flush=True)

        samples.append(broker_figures(broker_pid))
        targets = bridge_names + sim_names
        for child in children:
            assert child.stdin is not None
            child.stdin.write("GO " + json.dumps(targets) + "\n")
            child.stdin.flush()
        t0 = time.time()

        def bridge_sender(bridge: StdioBridge, name: str) -> None:
            rng = random.Random(name)
            seq = 0
            while not stop_sending.is_set():
                stop_sending.wait(rng.expovariate(options.bridge_rate))
                if stop_sending.is_set():
                    return
                target = rng.choice(targets)
                if target == name:
                    continue
                seq += 1
                key = f"{name}:{seq}"
                at = time.time()
                try:
                    answer = bridge.call("send_message", {"to_id": target, "message": f"soak|{key}|{at:.6f}"})
                    ok = "result" in answer and not answer["result"].get("isError")
                except Exception:  # a bridge that failed counts its message as not sent
                    ok = False
                bridge_sent.append((name, key, at, ok))

        def sampler() -> None:
            while not stop_sending.wait(window):
                samples.append(broker_figures(broker_pid))

        threads = [threading.Thread(target=bridge_sender, args=(b, n), daemon=True) for b, n in zip(bridges, bridge_names)]
        threads.append(threading.Thread(target=sampler, daemon=True))
        for thread in threads:
            thread.start()
        while time.time() - t0 < options.seconds:
            time.sleep(min(5.0, options.seconds - (time.time() - t0)))  # the soak's own duration
            print(f"  {time.time() - t0:6.0f} s: {len(bridge_sent)} bridge sends so far", flush=True)
        stop_sending.set()
        for child in children:
            child.stdin.write("HUSH\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        for thread in threads:
            thread.join(30)
        time.sleep(options.drain)  # let the last messages arrive
        samples.append(broker_figures(broker_pid))

        sent = list(bridge_sent)
        received: list[tuple[str, str, float]] = []
        for bridge, name in zip(bridges, bridge_names):
            for note in bridge.notifications:
                if note.get("method") != "notifications/claude/channel":
                    continue
                match = KEY.search(note["params"]["content"])
                if match:
                    received.append((name, match.group(1), note["received_at"]))
        for index, child in enumerate(children):
            child.stdin.write("STOP\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            child.wait(60)
            data = json.loads((base / f"sims{index}.json").read_text())
            sent += [tuple(s) for s in data["sent"]]
            received += [tuple(r) for r in data["received"]]
        report = summarise(sent, received, samples, t0, window, options)
        report["broker_log_errors"] = broker.log_text().count("Unhandled Error")
    finally:
        stop_sending.set()
        for bridge in bridges:
            bridge.close(5)
        for agent in agents:
            agent.cleanup()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    print_report(report)
    Path(options.json).write_text(json.dumps(report, indent=1) + "\n")
    write_png(Path(options.png), report)
    print(f"wrote {options.png} and {options.json}")
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 else 1


def summarise(sent: list, received: list, samples: list, t0: float, window: float,
              options: argparse.Namespace) -> dict[str, Any]:
    """Delivered, lost, duplicated; latency per window; broker RSS/fds over time."""
    ok = {key: at for (_s, key, at, good) in sent if good}
    refused = sum(1 for s in sent if not s[3])
    first: dict[str, float] = {}
    duplicated = 0
    for _recipient, key, at in received:
        if key in first:
            duplicated += 1
        else:
            first[key] = at
    lost = [k for k in ok if k not in first]
    windows: list[dict[str, Any]] = []
    count = int(options.seconds // window) + (1 if options.seconds % window else 0)
    for index in range(count):
        lo, hi = t0 + index * window, t0 + (index + 1) * window
        latencies = [(first[k] - at) * 1000 for k, at in ok.items() if lo <= at < hi and k in first]
        windows.append({"from_s": round(index * window), "to_s": round(min(options.seconds, (index + 1) * window)),
                        "delivered": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 2),
                        "p95_ms": round(percentile(latencies, 0.95), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
                        "max_ms": round(max(latencies), 2) if latencies else None})
    everything = [(first[k] - at) * 1000 for k, at in ok.items() if k in first]
    return {
        "bridges": options.bridges, "simulated_peers": options.sims, "seconds": options.seconds,
        "bridge_rate": options.bridge_rate, "sim_rate": options.sim_rate,
        "sent": len(ok), "refused": refused, "delivered": len(first), "lost": len(lost), "lost_examples": lost[:10],
        "duplicated": duplicated,
        "latency_ms": {"p50": round(percentile(everything, 0.5), 2), "p95": round(percentile(everything, 0.95), 2),
                       "p99": round(percentile(everything, 0.99), 2), "max": round(max(everything), 2) if everything else None},
        "windows": windows,
        "broker_start": samples[0], "broker_end": samples[-1],
        "broker_samples": [{**s, "t_s": round(s["at"] - t0, 1)} for s in samples],
    }


def print_report(report: dict[str, Any]) -> None:
    """The figures, as a table."""
    print(f"\nsoak: {report['bridges']} bridges + {report['simulated_peers']} simulated peers, {report['seconds']:.0f} s")
    print(f"sent {report['sent']}, delivered {report['delivered']}, lost {report['lost']}, "
          f"duplicated {report['duplicated']}, refused {report['refused']}")
    lat = report["latency_ms"]
    print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"{'window':>12} {'delivered':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for w in report["windows"]:
        print(f"{w['from_s']:>5}-{w['to_s']:<5} s {w['delivered']:>9} {w['p50_ms']:>8} {w['p95_ms']:>8} "
              f"{w['p99_ms']:>8} {w['max_ms']!s:>8}")
    s, e = report["broker_start"], report["broker_end"]
    print(f"broker RSS {s['rss_mib']} MiB -> {e['rss_mib']} MiB; open fds {s['fds']} -> {e['fds']}; "
          f"CPU {e['cpu_s'] - s['cpu_s']:.1f} s over the run")


if __name__ == "__main__":
    sys.exit(main())
