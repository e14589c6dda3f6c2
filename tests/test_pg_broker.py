"""A real broker process with ``CLAUDE_PEERS_DB`` naming a PostgreSQL database, real bridges under
stand-in agents: mail flows end to end, survives kill -9 of the broker, and the DSN's password
appears nowhere (status, the broker's log, its command line). Skipped without PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from bridge_support import FakeAgent, asyncio_test, open_bridge, ready, started_agents
from conftest import ROOT, BrokerProcess, broker_env
from engines import query

PASSWORD = "pg-s3cret-word"


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A fresh database as a postgresql:// URL carrying a password (trust auth ignores it)."""
    name = pg_server.fresh_database()
    try:
        yield pg_server.url(name, password=PASSWORD)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_broker(short_dir: Path, pg_url: str) -> Iterator[BrokerProcess]:
    """A broker subprocess whose database is the PostgreSQL one."""
    broker = BrokerProcess(short_dir, broker_env(short_dir, CLAUDE_PEERS_DB=pg_url)).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_agent(pg_broker: BrokerProcess) -> Iterator[Callable[..., FakeAgent]]:
    """Start stand-in agents in the broker's environment; all are ended afterwards."""
    with started_agents(pg_broker) as make:
        yield make


def cli_status(broker: BrokerProcess) -> dict[str, Any]:
    """``claude-peers status --json`` in the broker's environment."""
    result = subprocess.run([sys.executable, "-m", "claudepeers", "status", "--json"], env=broker.env,
                            capture_output=True, text=True, timeout=30, cwd=broker.base)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@asyncio_test
async def test_mail_flows_through_postgresql_and_survives_a_broker_kill(make_agent: Callable, pg_broker: BrokerProcess,
                                                                       pg_url: str) -> None:
    """A codex peer sends to a channel Claude: shown once; the broker is SIGKILLed and restarted
    on the same database: ids stay, mail sent after flows on, every message is in PostgreSQL."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        a_id = (await ca.text("whoami")).split("ID: ")[1].split("\n")[0]
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "through postgres"})
        assert " shown to alpha " in sent, sent
        [first] = await ca.channel.wait_for(1)
        assert first.content == "through postgres"
        pg_broker.stop(signal.SIGKILL)
        pg_broker.start()
        assert (await ca.text("whoami")).split("ID: ")[1].split("\n")[0] == a_id
        await cb.text("send_message", {"to_id": "alpha", "message": "after the kill"})
        items = await ca.channel.wait_for(2)
        assert [n.content for n in items] == ["through postgres", "after the kill"]
    bodies = [row[0] for row in query(pg_url, "SELECT body FROM messages ORDER BY id")]
    assert bodies == ["through postgres", "after the kill"]
    assert query(pg_url, "SELECT COUNT(*) FROM messages WHERE acked_at IS NULL") == [(0,)]


def test_the_password_appears_in_no_status_log_or_command_line(pg_broker: BrokerProcess) -> None:
    """status shows the database with its password masked; the broker's log and argv never hold it."""
    status = cli_status(pg_broker)
    assert "***@" in status["database"] and PASSWORD not in json.dumps(status)
    assert PASSWORD not in pg_broker.log_text()
    assert pg_broker.process is not None
    assert not any(PASSWORD in part for part in psutil.Process(pg_broker.process.pid).cmdline())


def test_an_unreachable_database_fails_the_start_clearly_without_the_password(short_dir: Path) -> None:
    """A broker whose PostgreSQL is not there exits non-zero, saying which database (masked) and why."""
    url = f"postgresql://peer:{PASSWORD}@/peers?host={short_dir}"
    env = broker_env(short_dir, CLAUDE_PEERS_DB=url)
    result = subprocess.run([sys.executable, "-m", "claudepeers.broker.main"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode != 0
    assert "cannot connect to the database postgresql://peer:***@/peers" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
