"""A partition (DESIGN 7, "Faults"): one host's link to the database cut during cross-host
traffic (``ip link set <veth> down`` in its network namespace), then healed.

While beta is cut off: a send from alpha to beta's peer is committed and answered
``queued`` (never ``shown``); a send of beta's peer is refused (``BrokerUnavailable``, not
a call that hangs); mail beta had already read is still pushed to its peer's bridge;
beta's ``status`` and ``doctor`` say in one line that the database is unreachable, and
alpha calls beta unreachable. After the heal (beta reconnects with backoff) everything
flows again, and every send that was answered is shown once, in order, with its
acknowledgement recorded. Needs root (network namespaces); skips with the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

import hosts_support
from bridge_support import asyncio_test, open_bridge
from hosts_support import Host, Hosts, host_place, hosts, wait_until  # noqa: F401 - the fixtures
from test_hosts_faults import my_id, send, shown_once_in_order

pytest.importorskip("psycopg")


def database_line(host: Host) -> str:
    """What ``status --json`` says of the host's reach of the database."""
    return host.status()["network"]["database"]


async def partition_rounds(hosts: Hosts, rounds: int) -> None:
    if hosts.lab is None:
        pytest.skip(f"a partition needs a network namespace per host: {hosts_support.FALLBACK}")
    hosts.extra.update(CLAUDE_PEERS_HEARTBEAT_SECONDS="0.3", CLAUDE_PEERS_DELIVERY_WAIT_SECONDS="1")
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    assert beta.namespace is not None
    ann, bob = alpha.agent("ann", channels=True), beta.agent("bob", channels=True)
    async with AsyncExitStack() as stack:
        ca = await stack.enter_async_context(open_bridge(ann))
        cb = await stack.enter_async_context(open_bridge(bob))
        ann_id, bob_id = await my_id(ca), await my_id(cb)
        wait_until(lambda: bob_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
        wait_until(lambda: ann_id in beta.cli("peers", "--network", "--json").stdout, what="beta to see ann")
        bob_bridge = await cb.bridge_pid()
        to_bob: dict[int, str] = {}
        to_ann: dict[int, str] = {}
        for round_ in range(rounds):
            for n in range(2):
                sent = await send(ca, "bob@beta", f"r{round_} before {n}", to_bob)
                assert sent and " shown to bob " in sent, sent
            # Mail beta reads before the cut, its push held up in bob's (stopped) bridge.
            os.kill(bob_bridge, signal.SIGSTOP)
            try:
                async with anyio.create_task_group() as group:
                    for n in range(2):
                        group.start_soon(send, ca, "bob@beta", f"r{round_} in flight {n}", to_bob)
                beta.namespace.cut()
            finally:
                os.kill(bob_bridge, signal.SIGCONT)
            # Committed mail is still pushed locally while beta cannot reach the database.
            with anyio.fail_after(10):
                while not {f"r{round_} in flight 0", f"r{round_} in flight 1"} <= {n.content for n in cb.channel.items}:
                    await anyio.sleep(0.05)
            # alpha still commits; it answers queued, never shown.
            queued = await send(ca, "bob@beta", f"r{round_} during", to_bob)
            assert queued and " queued for bob " in queued, queued
            # beta's own sends are refused (nothing committed), within the call's bound.
            with anyio.fail_after(8):
                refused = await cb.call("send_message", {"to_id": ann_id, "message": f"r{round_} refused"})
            assert refused.is_error, refused
            line = wait_until(lambda: "unreachable" in database_line(beta) and database_line(beta), timeout=15,
                              what="beta's status to say the database is unreachable")
            assert "retrying in" in line, line
            doctor = beta.cli("doctor", check=False).stdout
            assert "database unreachable" in doctor, doctor
            wait_until(lambda: not {h["host"]: h for h in alpha.status()["hosts"]}["beta"]["reachable"], timeout=15,
                       what="alpha to call beta unreachable")
            beta.namespace.heal()
            wait_until(lambda: database_line(beta) == "connected"
                       and beta.status()["network"]["notifications"] == "listening", timeout=30,
                       what="beta to reconnect after the heal")
            with anyio.fail_after(30):  # the first sends after the heal may still find beta unheard
                while True:
                    sent = await send(ca, "bob@beta", f"r{round_} after", to_bob)
                    if sent and " shown to bob " in sent:
                        break
                    await anyio.sleep(0.2)
            back = await send(cb, ann_id, f"r{round_} back", to_ann)
            assert back and " shown to ann " in back, back
        await shown_once_in_order(cb, to_bob)
        await shown_once_in_order(ca, to_ann)
        assert not any(n.content.endswith(" refused") for n in ca.channel.items)
    # Every shown message's acknowledgement reached the database (none lost in the partition).
    wait_until(lambda: not hosts.server.execute(
        f"SELECT id FROM messages WHERE to_id = '{bob_id}' AND acked_at IS NULL", hosts.database), timeout=15,
        what="every message to bob acknowledged in the database")
    assert json.loads(alpha.cli("status", "--json").stdout)["network"]["database"] == "connected"


@asyncio_test
async def test_a_partition_of_the_recipients_host_loses_and_repeats_nothing(hosts: Hosts) -> None:
    """One round: beta cut off from the database during traffic, then healed."""
    await partition_rounds(hosts, 1)


@pytest.mark.slow
@asyncio_test
async def test_ten_partitions_during_traffic(hosts: Hosts) -> None:
    """Ten rounds of cutting beta's link to the database and healing it."""
    await partition_rounds(hosts, 10)
