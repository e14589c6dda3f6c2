"""Several hosts on one machine: broker processes that share one PostgreSQL database, each
with its own CLAUDE_PEERS_HOST, run directory, socket and HOME (as separate machines would
have), and stand-in agents with real bridges under each.

Run as root, each host's broker runs in a network namespace of its own and reaches
PostgreSQL over TCP through a veth link (tests/hosts_netns.py), so that a test can cut one
host off the database. Elsewhere (no root, or ``ip netns`` refused) the hosts are distinct
host names on loopback with the run's shared server, and :data:`FALLBACK` says why; the test
``test_each_host_runs_in_a_network_namespace_of_its_own`` skips with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge_support import FakeAgent
from conftest import BrokerProcess, broker_env
import hosts_netns
from hosts_netns import Lab, Namespace


@dataclass
class Host:
    """One host: its broker process and the agents started under it."""

    name: str
    broker: BrokerProcess
    agents: list[FakeAgent] = field(default_factory=list)
    #: The host's network namespace (None on loopback).
    namespace: Namespace | None = None

    def agent(self, name: str, kind: str = "claude", channels: bool = False, cwd: Path | None = None) -> FakeAgent:
        """Start a stand-in agent in this host's environment."""
        agent = FakeAgent(self.broker.base, name, kind, cwd or self.broker.base, dict(self.broker.env), channels).start()
        self.agents.append(agent)
        return agent

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``claude-peers ARGS`` against this host's broker."""
        return subprocess.run([sys.executable, "-m", "claudepeers", *args], env=self.broker.env,
                              capture_output=True, text=True, timeout=60, check=check)

    def status(self) -> dict[str, Any]:
        """``claude-peers status --json`` of this host."""
        return json.loads(self.cli("status", "--json").stdout)


@dataclass
class Hosts:
    """The hosts of one test, sharing one database."""

    base: Path
    server: Any
    database: str
    #: The namespaces of the hosts (None: distinct host names on loopback).
    lab: Lab | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    #: More environment for every host started from now on.
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        """The DSN the brokers use: over TCP to the bridge's address, else the server's socket."""
        return self.server.tcp_dsn(self.database) if self.lab is not None else self.server.dsn(self.database)

    def env(self, name: str, home_name: str | None = None) -> dict[str, str]:
        """The environment of host ``name``'s broker and clients (HOME: ``home_name``, else ``name``)."""
        home = self.base / (home_name or name)
        home.mkdir(exist_ok=True)
        return broker_env(home, CLAUDE_PEERS_DB=self.dsn, CLAUDE_PEERS_HOST=name, **self.extra)

    def namespace(self, name: str) -> Namespace | None:
        """Host ``name``'s namespace, made on first use (None on loopback)."""
        if self.lab is None:
            return None
        return self.lab.namespaces.get(name) or self.lab.add(name)

    def start(self, name: str) -> Host:
        """Start host ``name``'s broker (a separate process, in its namespace) and wait until it listens."""
        namespace = self.namespace(name)
        broker = BrokerProcess(self.base / name, self.env(name), wrapper=namespace.wrapper() if namespace else [])
        broker.start()
        host = self.hosts[name] = Host(name, broker, namespace=namespace)
        return host

    def close(self) -> None:
        """End every agent and broker (by pid), then remove the hosts' namespaces."""
        for host in self.hosts.values():
            for agent in host.agents:
                agent.cleanup()
            host.broker.stop()
        if self.lab is not None:
            for name in list(self.lab.namespaces):
                self.lab.remove(name)


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "the condition") -> Any:
    """Poll ``predicate`` (another process's state; nothing to subscribe to) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


#: Why the hosts share loopback rather than each having a network namespace (None: they do).
FALLBACK: str | None = None


@dataclass
class Place:
    """Where the run's hosts live: a server they reach, and the namespaces' lab if any."""

    server: Any
    lab: Lab | None


#: The run's one place and how many session fixtures hold it (each test module that imports
#: ``host_place`` has a session fixture of its own; they share one lab and one server).
_PLACE: list[Any] = [None, 0]


def _open_place(request: pytest.FixtureRequest) -> Place:
    global FALLBACK
    reason = hosts_netns.unavailable()
    if reason is not None:
        FALLBACK = f"hosts share loopback (distinct host names), no network namespaces: {reason}"
        print(FALLBACK)
        return Place(request.getfixturevalue("pg_server"), None)
    import pg_server as servers

    unusable = servers.unavailable()
    if unusable is not None:
        pytest.skip(unusable)
    lab = Lab().open()
    try:
        assert lab.network is not None
        server = servers.PostgresServer(listen=lab.address, hba=[f"host all all {lab.network} trust"]).start()
    except BaseException:
        lab.close()
        raise
    return Place(server, lab)


@pytest.fixture(scope="session")
def host_place(request: pytest.FixtureRequest) -> Iterator[Place]:
    """As root: a lab (a bridge in the root namespace) and a PostgreSQL server of its own that
    listens on the bridge's address and trusts the lab's /24; else the run's shared server."""
    if _PLACE[0] is None:
        _PLACE[0] = _open_place(request)
    _PLACE[1] += 1
    place = _PLACE[0]
    try:
        yield place
    finally:
        _PLACE[1] -= 1
        if _PLACE[1] == 0:
            _PLACE[0] = None
            if place.lab is not None:
                place.server.close()
                place.lab.close()


@pytest.fixture
def hosts(host_place: Place, short_dir: Path) -> Iterator[Hosts]:
    """Hosts on a database of their own (advisory locks and NOTIFY channels are per database)."""
    server = host_place.server
    database = server.fresh_database()
    network = Hosts(short_dir, server, database, host_place.lab)
    try:
        yield network
    finally:
        network.close()
        for host in network.hosts.values():
            print(f"--- log of host {host.name} ---\n{host.broker.log_text()[-int(os.environ.get('CLAUDE_PEERS_TEST_LOG_TAIL', '4000')):]}")
        server.drop_database(database)


def net_namespace(pid: int) -> str:
    """The network namespace a process runs in (``net:[inode]``)."""
    return os.readlink(f"/proc/{pid}/ns/net")
