"""Faults across hosts (DESIGN 7, "Faults"): kill -9 of one host's broker during cross-host
traffic, and a restart of PostgreSQL during traffic. Whatever happens, every send that was
answered is shown to its recipient once, in the order the messages were accepted (their
ids); a send refused while the database is away was not answered and may not be shown.
Two rounds each in the quick suite, ten in the slow one.
"""

from __future__ import annotations

import re
import signal
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from bridge_support import asyncio_test, open_bridge, text_of
from hosts_support import Host, Hosts, host_place, hosts, wait_until  # noqa: F401 - the fixtures

pytest.importorskip("psycopg")


async def my_id(bridge: Any) -> str:
    return (await bridge.text("whoami")).split("ID: ")[1].split("\n")[0]


async def send(bridge: Any, to: str, body: str, answered: dict[int, str]) -> str | None:
    """One send_message; an answered one is recorded by its message id."""
    result = await bridge.call("send_message", {"to_id": to, "message": body})
    text = text_of(result)
    if result.is_error:
        return None
    number = int(re.match(r"Message #(\d+) ", text).group(1))  # type: ignore[union-attr]
    answered[number] = body
    return text


async def two_hosts(stack: AsyncExitStack, hosts: Hosts) -> tuple[Host, Host, Any, Any]:
    """alpha with ann (inline), beta with bob (a channel): both bridges registered and seen."""
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    ann, bob = alpha.agent("ann"), beta.agent("bob", channels=True)
    ca = await stack.enter_async_context(open_bridge(ann))
    cb = await stack.enter_async_context(open_bridge(bob))
    bob_id = await my_id(cb)
    wait_until(lambda: bob_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
    return alpha, beta, ca, cb


async def shown_once_in_order(cb: Any, answered: dict[int, str], timeout: float = 60.0) -> None:
    """Every answered message reaches bob's channel exactly once, in id order."""
    with anyio.fail_after(timeout):
        while not set(answered) <= {int(n.meta["message_id"]) for n in cb.channel.items}:
            await anyio.sleep(0.05)
    shown = [int(n.meta["message_id"]) for n in cb.channel.items]
    assert len(shown) == len(set(shown)), f"shown twice: {shown}"
    assert shown == sorted(shown), f"out of order: {shown}"
    by_id = {int(n.meta["message_id"]): n.content for n in cb.channel.items}
    assert all(by_id[number] == body for number, body in answered.items())


async def broker_kill_rounds(hosts: Hosts, rounds: int) -> None:
    async with AsyncExitStack() as stack:
        alpha, beta, ca, cb = await two_hosts(stack, hosts)
        answered: dict[int, str] = {}
        for round_ in range(rounds):
            for n in range(4):
                assert await send(ca, "bob@beta", f"r{round_} before {n}", answered)
            beta.broker.stop(signal.SIGKILL)  # mid-traffic: the next sends find no broker there
            async with anyio.create_task_group() as group:
                for n in range(3):
                    group.start_soon(send, ca, "bob@beta", f"r{round_} during {n}", answered)
            beta.broker.start()
        await shown_once_in_order(cb, answered)
        assert len(answered) == rounds * 7  # alpha's database was there all along: all answered


async def database_restart_rounds(hosts: Hosts, rounds: int) -> None:
    pg_server = hosts.server
    async with AsyncExitStack() as stack:
        alpha, beta, ca, cb = await two_hosts(stack, hosts)
        answered: dict[int, str] = {}
        for round_ in range(rounds):
            for n in range(4):
                assert await send(ca, "bob@beta", f"r{round_} before {n}", answered)
            pg_server.stop()  # a fast shutdown: every connection of every host breaks
            refused = await send(ca, "bob@beta", f"r{round_} while down", answered)
            assert refused is None  # not committed, so not answered
            pg_server.start()
            with anyio.fail_after(60):  # the pool reconnects on its next use
                while await send(ca, "bob@beta", f"r{round_} after", answered) is None:
                    await anyio.sleep(0.2)
            for n in range(3):
                assert await send(ca, "bob@beta", f"r{round_} after {n}", answered)
        await shown_once_in_order(cb, answered)
        status = alpha.status()
        assert status["network"]["database"] == "connected" or "retrying" in status["network"]["database"]


@asyncio_test
async def test_kill_9_of_the_recipients_broker_loses_and_repeats_nothing(hosts: Hosts) -> None:
    """Two rounds of kill -9 of beta's broker while alpha sends to its peer."""
    await broker_kill_rounds(hosts, 2)


@asyncio_test
async def test_a_database_restart_loses_and_repeats_nothing_answered(hosts: Hosts) -> None:
    """Two rounds of a PostgreSQL restart during cross-host traffic."""
    await database_restart_rounds(hosts, 2)


@pytest.mark.slow
@asyncio_test
async def test_ten_rounds_of_kill_9_of_the_recipients_broker(hosts: Hosts) -> None:
    """Ten rounds of kill -9 of beta's broker during cross-host traffic."""
    await broker_kill_rounds(hosts, 10)


@pytest.mark.slow
@asyncio_test
async def test_ten_database_restarts_during_traffic(hosts: Hosts) -> None:
    """Ten rounds of a PostgreSQL restart during cross-host traffic."""
    await database_restart_rounds(hosts, 10)
