"""Fault injection on real processes (issue 6): kill -9 of the broker during traffic, twenty
clients autostarting at once. (Databases the broker must refuse and a full disk:
``test_faults_refused.py``; real bridges under fire: ``test_faults_bridges.py``.)

Traffic comes from real TCP connections (:mod:`raw_amp`) registered for real stand-in agent
processes (``sleep``); TCP is used because the broker checks UNIX peers against the process
tree (SO_PEERCRED), and one test process cannot be the child of several agents. Every
process started here is ended by its pid.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import pytest_twisted

from claudepeers.common import client as broker_client
from claudepeers.common.settings import Settings
from claudepeers.wire import commands as wire

from conftest import ROOT, BrokerProcess, broker_env
from raw_amp import Closed, RawAMP
from fault_support import TRAFFIC_ENV, StandIns, free_port, register, tcp_session

# --- kill -9 of the broker during traffic ------------------------------------------------------


@dataclass
class Ledger:
    """What the senders and the reader were told, across every round."""

    committed: dict[str, int] = field(default_factory=dict)  # body -> id, Send answered
    attempted: set[str] = field(default_factory=set)
    fetched: list[tuple[int, str]] = field(default_factory=list)  # every (id, body) read, in order
    acked: set[int] = field(default_factory=set)  # Acknowledge answered
    reread_after_ack: list[int] = field(default_factory=list)  # must stay empty
    kills: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def sender_loop(client: RawAMP, to: str, label: str, ledger: Ledger, stop: threading.Event) -> None:
    """Send numbered messages until the broker dies (or ``stop``)."""
    number = 0
    while not stop.is_set():
        body = f"{label}#{number}"
        number += 1
        with ledger.lock:
            ledger.attempted.add(body)
        try:
            answer = client.call(wire.Send, to=to, body=body)
        except (Closed, OSError):
            return
        with ledger.lock:
            ledger.committed[body] = answer["message_id"]


def reader_loop(client: RawAMP, ledger: Ledger, stop: threading.Event) -> None:
    """Fetch and acknowledge unread mail until the broker dies (or ``stop`` and nothing is left)."""
    while True:
        try:
            page = client.call(wire.FetchUnread, limit=200)
            messages = [(m["id"], m["body"]) for m in page["messages"]]
            with ledger.lock:
                ledger.fetched += messages
                ledger.reread_after_ack += [i for i, _ in messages if i in ledger.acked]
            if not messages:
                if stop.is_set():
                    return
                continue
            client.call(wire.Acknowledge, message_ids=[i for i, _ in messages])
        except (Closed, OSError):
            return
        with ledger.lock:
            ledger.acked.update(i for i, _ in messages)


def kill_rounds(base: Path, rounds: int, seed: int) -> Ledger:
    """Run ``rounds`` of traffic, each ended by kill -9 of the broker at a random moment,
    then a last clean round in which the reader drains everything."""
    rng = random.Random(seed)
    port = free_port()
    broker = BrokerProcess(base, broker_env(base, **TRAFFIC_ENV), args=["--tcp", str(port)])
    agents = StandIns()
    ledger = Ledger()
    try:
        senders = [tcp_session(f"sender-{index}") for index in range(3)]
        reader_agent = tcp_session("reader")
        ids: dict[tuple, str] = {}
        for round_number in range(rounds + 1):
            broker.start()
            token = broker.settings.token_path.read_text().strip()
            reader = RawAMP.tcp(port, token)
            reader_id = register(reader, reader_agent, "/work/reader")["peer_id"]
            assert ids.setdefault(reader_agent, reader_id) == reader_id, "ids survive a kill -9"
            clients = []
            for index, agent in enumerate(senders):
                client = RawAMP.tcp(port, token)
                peer_id = register(client, agent, f"/work/s{index}")["peer_id"]
                assert ids.setdefault(agent, peer_id) == peer_id, "ids survive a kill -9"
                clients.append(client)
            stop = threading.Event()
            last = round_number == rounds
            threads = [threading.Thread(target=sender_loop, args=(c, reader_id, f"s{i}r{round_number}", ledger, stop))
                       for i, c in enumerate(clients)]
            threads.append(threading.Thread(target=reader_loop, args=(reader, ledger, stop)))
            for thread in threads:
                thread.start()
            # The kill must land at an unpredictable moment of real traffic: real time is the point.
            time.sleep(rng.uniform(0.05, 0.6))
            if last:
                stop.set()
                for thread in threads:
                    thread.join(30)
                broker.stop()
            else:
                broker.stop(signal.SIGKILL)
                ledger.kills += 1
                for thread in threads:
                    thread.join(30)
            assert not any(t.is_alive() for t in threads)
            for client in [reader, *clients]:
                client.close()
    finally:
        broker.stop(signal.SIGKILL)
        agents.end_all()
    return ledger


def check_ledger(ledger: Ledger) -> None:
    """Every answered Send was read exactly once after dedup; nothing acknowledged came back."""
    first_seen: dict[int, str] = {}
    for message_id, body in ledger.fetched:
        assert first_seen.setdefault(message_id, body) == body
    bodies = {body: message_id for message_id, body in first_seen.items()}
    lost = [body for body in ledger.committed if body not in bodies]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert all(ledger.committed[b] == bodies[b] for b in ledger.committed), "a committed id changed"
    assert set(bodies) <= ledger.attempted, "a message nobody sent was read"
    assert len(bodies) == len(first_seen), "one body stored under two ids (a duplicate)"
    # Re-reads are allowed only for messages whose Acknowledge was never answered.
    assert not ledger.reread_after_ack, ledger.reread_after_ack[:10]
    # Per recipient order: one sender's messages arrive in the order it sent them.
    per_sender: dict[str, list[int]] = {}
    for message_id, body in sorted(first_seen.items()):
        label, number = body.split("#")
        per_sender.setdefault(label, []).append(int(number))
    for numbers in per_sender.values():
        assert numbers == sorted(numbers)


def test_three_broker_kills_during_traffic_lose_and_duplicate_nothing(short_dir: Path) -> None:
    """Three kill -9 rounds during sends and reads: every answered Send is read exactly once."""
    ledger = kill_rounds(short_dir, rounds=3, seed=3)
    check_ledger(ledger)
    assert ledger.kills == 3 and len(ledger.committed) > 0
    print(f"kill rounds: {ledger.kills}, committed {len(ledger.committed)}, read {len(ledger.fetched)}")


@pytest.mark.slow
def test_twenty_five_broker_kills_during_traffic_lose_and_duplicate_nothing(short_dir: Path) -> None:
    """Twenty-five kill -9 rounds (slow suite): every answered Send is read exactly once."""
    ledger = kill_rounds(short_dir, rounds=25, seed=int(os.environ.get("CP_FAULT_SEED", "25")))
    check_ledger(ledger)
    assert ledger.kills == 25
    distinct = len({i for i, _ in ledger.fetched})
    summary = dict(rounds=ledger.kills, committed=len(ledger.committed), attempted=len(ledger.attempted),
                   read=distinct, reread=len(ledger.fetched) - distinct, lost=0, duplicated=0)
    print("KILL-ROUNDS " + json.dumps(summary))


# --- twenty clients, no broker ------------------------------------------------------------------

ENSURE = "from claudepeers.common.client import ensure_broker; print(ensure_broker(__import__('claudepeers.common.settings').common.settings.Settings.from_env(), wait=30))"


def brokers_for(socket_path: Path) -> list[psutil.Process]:
    """Running broker processes serving ``socket_path``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(socket_path) in cmdline and "broker" in cmdline:
            found.append(process)
    return found


def test_ten_clients_starting_at_once_start_exactly_one_broker(short_dir: Path) -> None:
    """Ten processes call ensure_broker at once with no broker: one starts it, all find it."""
    many_clients_start_one_broker(short_dir, 10)


@pytest.mark.slow
def test_twenty_clients_starting_at_once_start_exactly_one_broker(short_dir: Path) -> None:
    """Twenty processes call ensure_broker at once with no broker: one starts it, all find it."""
    many_clients_start_one_broker(short_dir, 20)


def many_clients_start_one_broker(short_dir: Path, count: int) -> None:
    """``count`` processes call ensure_broker at once; exactly one broker runs afterwards."""
    env = broker_env(short_dir)
    del env["CLAUDE_PEERS_NO_AUTOSTART"]
    socket_path = Path(env["CLAUDE_PEERS_SOCKET"])
    clients = [subprocess.Popen([sys.executable, "-c", ENSURE], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        outputs = [c.communicate(timeout=60) for c in clients]
        assert all(c.returncode == 0 for c in clients), [o[1][-300:] for o in outputs]
        started = [o[0].strip() for o in outputs]
        assert started.count("True") == 1 and started.count("False") == count - 1, started
        brokers = brokers_for(socket_path)
        assert len(brokers) == 1, [b.cmdline() for b in brokers]
        hello = RawAMP.unix(str(socket_path)).call(wire.Hello)
        assert hello["pid"] == brokers[0].pid
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        for broker in brokers_for(socket_path):
            broker.kill()
            broker.wait(10)


@pytest_twisted.ensureDeferred
async def test_ten_connects_of_one_process_at_once_start_one_broker(short_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten ``client.connect`` calls at once (the CLI's and, through the same endpoint, the
    bridge's way in) with no broker: one broker starts, and every call gets a live connection to it."""
    env = broker_env(short_dir)
    del env["CLAUDE_PEERS_NO_AUTOSTART"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CLAUDE_PEERS_NO_AUTOSTART", raising=False)
    settings = Settings.from_env(env)
    from twisted.internet import defer, reactor

    try:
        protocols = await defer.gatherResults([broker_client.connect(reactor, settings) for _ in range(10)])
        hellos = await defer.gatherResults([protocol.callRemote(wire.Hello) for protocol in protocols])
        brokers = brokers_for(settings.socket_path)
        assert len(brokers) == 1, [b.cmdline() for b in brokers]
        assert {hello["pid"] for hello in hellos} == {brokers[0].pid}
        for protocol in protocols:
            protocol.transport.loseConnection()
    finally:
        for broker in brokers_for(settings.socket_path):
            broker.kill()
            broker.wait(10)
