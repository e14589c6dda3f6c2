"""Several hosts sharing one PostgreSQL database: brokers as separate processes, each its own
host (a network namespace each, reaching PostgreSQL over TCP, when the tests run as root;
else a distinct CLAUDE_PEERS_HOST on loopback), real bridges under each (DESIGN 7)."""

from __future__ import annotations

from contextlib import AsyncExitStack
import os
import signal
from typing import Any

import pytest

from bridge_support import asyncio_test, git, open_bridge, ready
from conftest import BrokerProcess
from hook_support import HookAgent
from test_hooks_wait import Waiter, until_armed
import hosts_support
from hosts_support import Hosts, host_place, hosts, net_namespace, wait_until  # noqa: F401 - the fixtures

pytest.importorskip("psycopg")


async def my_id(bridge: Any) -> str:
    return (await bridge.text("whoami")).split("ID: ")[1].split("\n")[0]


def test_each_host_runs_in_a_network_namespace_of_its_own(hosts: Hosts) -> None:
    """As root, each broker runs in its own network namespace and reaches PostgreSQL over TCP
    from its veth's address (the server sees that client address); elsewhere this skips with
    the fallback's reason (the other tests then run the hosts on loopback)."""
    if hosts.lab is None:
        pytest.skip(hosts_support.FALLBACK or "no network namespaces")
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    spaces = {net_namespace(alpha.broker.process.pid), net_namespace(beta.broker.process.pid)}
    assert len(spaces) == 2 and net_namespace(os.getpid()) not in spaces
    clients = {row[0] for row in hosts.server.execute(
        "SELECT host(client_addr) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'claude-peers%'", hosts.database)}
    assert {alpha.namespace.address, beta.namespace.address} <= clients, clients
    # The bridges stay in the root namespace: a UNIX socket is a path, not a network address.
    assert alpha.status()["hosts"][0]["host"] == "alpha"


def test_a_second_broker_with_the_same_host_name_is_refused_naming_the_holder(hosts: Hosts) -> None:
    """The advisory lock per host name: the second broker exits 1 and names the first's address."""
    first = hosts.start("alpha")
    second = BrokerProcess(hosts.base / "alpha-2", hosts.env("alpha", home_name="alpha-2"))
    with pytest.raises(RuntimeError, match="exited with status 1"):
        second.start()
    log = second.log_text()
    assert "another broker already runs as host 'alpha'" in log, log
    assert f"pid {first.broker.process.pid} on " in log
    assert hosts.hosts["alpha"].status()["hosts"][0]["host"] == "alpha"


@asyncio_test
async def test_peers_of_two_hosts_list_and_message_each_other(hosts: Hosts) -> None:
    """list_peers(network) shows the other host's peer, machine does not, repo does for a clone
    of the same repository there; a send by id and by name@host is shown once on the other
    host, in order, and the sender hears "shown"."""
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    repo, clone = hosts.base / "repo", hosts.base / "clone"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=repo)
    git("remote", "add", "origin", "git@example.org:team/app.git", cwd=repo)
    git("clone", "-q", str(repo), str(clone), cwd=hosts.base)
    git("remote", "set-url", "origin", "https://example.org/team/app.git", cwd=clone)
    a = alpha.agent("ann", channels=True, cwd=repo)
    b = beta.agent("bob", channels=True, cwd=clone)
    async with AsyncExitStack() as stack:
        ca = await stack.enter_async_context(open_bridge(a, registered=False))
        cb = await stack.enter_async_context(open_bridge(b, registered=False))
        await ready(ca, cb)
        a_id, b_id = await my_id(ca), await my_id(cb)

        def sees(bridge_text: str, peer_id: str) -> bool:
            return f"ID: {peer_id}" in bridge_text

        network = await ca.text("list_peers", {"scope": "network"})
        if not sees(network, b_id):  # beta's peer row reaches alpha by notification
            wait_until(lambda: b_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
            network = await ca.text("list_peers", {"scope": "network"})
        assert sees(network, b_id)
        assert not sees(await ca.text("list_peers", {"scope": "machine"}), b_id)
        assert sees(await ca.text("list_peers", {"scope": "repo"}), b_id)
        sent = await ca.text("send_message", {"to_id": "bob@beta", "message": "hello from alpha"})
        assert " shown to bob " in sent, sent
        [note] = await cb.channel.wait_for(1)
        assert note.content == "hello from alpha" and note.meta["from_id"] == a_id
        back = await cb.text("send_message", {"to_id": a_id, "message": "hello back"})
        assert " shown to ann " in back, back
        [reply] = await ca.channel.wait_for(1)
        assert reply.content == "hello back"
        for n in range(5):
            await ca.text("send_message", {"to_id": b_id, "message": f"m{n}"})
        items = await cb.channel.wait_for(6)
        assert [item.content for item in items] == ["hello from alpha", *(f"m{n}" for n in range(5))]
        status = alpha.status()
        assert [(h["host"], h["reachable"]) for h in status["hosts"]] == [("alpha", True), ("beta", True)]


@asyncio_test
async def test_kill_across_hosts_is_carried_out_and_audited_by_the_targets_broker(hosts: Hosts) -> None:
    """kill_peer("bob@beta") from alpha: beta's broker checks and kills its own peer, audits it
    with the caller as id@alpha, and the outcome comes back to the caller."""
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    a = alpha.agent("ann", channels=True)
    b = beta.agent("bob", "codex")
    async with open_bridge(a) as ca:
        async with open_bridge(b, "codex-mcp-client") as cb:
            a_id, b_id = await my_id(ca), await my_id(cb)
            wait_until(lambda: b_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
            killed = await ca.text("kill_peer", {"peer_id": "bob@beta"})
            assert "on host beta" in killed, killed
            b.process.wait(10)
    database = hosts.database
    [audit] = hosts.server.execute("SELECT by_id, target_id, outcome FROM kills", database)
    assert audit[0] == f"{a_id}@alpha" and audit[1] == b_id and audit[2] in ("terminated", "killed")
    [request] = hosts.server.execute("SELECT by_host, target_host, outcome FROM kill_requests", database)
    assert request == ("alpha", "beta", audit[2])


@pytest.mark.slow
@asyncio_test
async def test_a_host_whose_broker_died_is_unreachable_and_so_are_its_peers(hosts: Hosts) -> None:
    """kill -9 of beta's broker: alpha shows beta and bob unreachable (not gone), and a send to
    bob is queued honestly; beta's restarted broker delivers it once."""
    hosts.extra["CLAUDE_PEERS_HEARTBEAT_SECONDS"] = "0.3"  # unreachable after 0.9 s
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    a = alpha.agent("ann")
    b = beta.agent("bob", channels=True)
    async with open_bridge(a) as ca, open_bridge(b) as cb:
        b_id = await my_id(cb)
        wait_until(lambda: b_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
        beta.broker.stop(signal.SIGKILL)
        wait_until(lambda: not {h["host"]: h for h in alpha.status()["hosts"]}["beta"]["reachable"], timeout=30,
                   what="alpha to call beta unreachable")
        listing = await ca.text("list_peers", {"scope": "network"})
        assert f"ID: {b_id}" in listing and "unreachable" in listing, listing
        queued = await ca.text("send_message", {"to_id": "bob@beta", "message": "while you were away"})
        assert " queued for bob " in queued and "unreachable" in queued, queued
        beta.broker.start()
        [note] = await cb.channel.wait_for(1, timeout=30)
        assert note.content == "while you were away"


@asyncio_test
async def test_a_cross_host_send_that_a_rewake_hook_wakes_its_peer_with_answers_woke(hosts: Hosts) -> None:
    """bob on beta is idle (Claude Code without a channel) with its rewake hook armed: a send
    from alpha wakes him with the message, and ann hears "woke", not "shown" (the hook's
    acknowledgement commits the row as shown; its notification must say how)."""
    alpha, beta = hosts.start("alpha"), hosts.start("beta")
    ann = alpha.agent("ann", "codex")
    bob = HookAgent(beta.broker.base, "bob", "claude", beta.broker.base, dict(beta.broker.env), False).start()
    beta.agents.append(bob)
    async with open_bridge(ann, "codex-mcp-client") as ca, open_bridge(bob, "claude-code") as cb:
        bob_id = await my_id(cb)
        wait_until(lambda: bob_id in alpha.cli("peers", "--network", "--json").stdout, what="alpha to see bob")
        waiter = Waiter(bob, "one")
        await until_armed(beta.broker, "bob", waiter)
        sent = await ca.text("send_message", {"to_id": "bob@beta", "message": "wake up and review PR 7"})
        run = await waiter.result()
        assert run.status == 2 and "\u2502 wake up and review PR 7" in run.stderr, run
        assert " woke bob " in sent and "shown" not in sent, sent
        assert await cb.text("check_messages") == "No new messages."
