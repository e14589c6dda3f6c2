"""Several hosts on one machine: broker processes that share one PostgreSQL database, each
with its own CLAUDE_PEERS_HOST, run directory, socket and HOME (as separate machines would
have), and stand-in agents with real bridges under each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge_support import FakeAgent
from conftest import BrokerProcess, broker_env


@dataclass
class Host:
    """One host: its broker process and the agents started under it."""

    name: str
    broker: BrokerProcess
    agents: list[FakeAgent] = field(default_factory=list)

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
    dsn: str
    hosts: dict[str, Host] = field(default_factory=dict)
    #: More environment for every host started from now on.
    extra: dict[str, str] = field(default_factory=dict)

    def env(self, name: str, home_name: str | None = None) -> dict[str, str]:
        """The environment of host ``name``'s broker and clients (HOME: ``home_name``, else ``name``)."""
        home = self.base / (home_name or name)
        home.mkdir(exist_ok=True)
        return broker_env(home, CLAUDE_PEERS_DB=self.dsn, CLAUDE_PEERS_HOST=name, **self.extra)

    def start(self, name: str) -> Host:
        """Start host ``name``'s broker (a separate process) and wait until it listens."""
        broker = BrokerProcess(self.base / name, self.env(name)).start()
        host = self.hosts[name] = Host(name, broker)
        return host

    def close(self) -> None:
        """End every agent and broker (by pid)."""
        for host in self.hosts.values():
            for agent in host.agents:
                agent.cleanup()
            host.broker.stop()


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


@pytest.fixture
def hosts(pg_server: Any, short_dir: Path) -> Iterator[Hosts]:
    """Hosts on a database of their own (advisory locks and NOTIFY channels are per database)."""
    database = pg_server.fresh_database()
    network = Hosts(short_dir, pg_server.dsn(database))
    try:
        yield network
    finally:
        network.close()
        for host in network.hosts.values():
            print(f"--- log of host {host.name} ---\n{host.broker.log_text()[-4000:]}")
        pg_server.drop_database(database)
