"""``claude-peers dashboard`` against a real broker: the person gets a working link, a
process under an agent is refused and told why."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bridge_support import FakeAgent
from cli_support import cli
from conftest import BrokerProcess
from hook_support import run_hook_blocking

from claudepeers.cli.install import installed_command


@pytest.mark.slow  # the quick suite covers the link in-process (test_dashboard_http.py)
def test_the_person_gets_a_link_that_the_broker_serves(broker_process: BrokerProcess) -> None:
    """From a plain terminal (no agent above) the link is printed, for 127.0.0.1, with a token."""
    import http.client

    done = cli(broker_process.env, "dashboard", "--print")
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith("http://127.0.0.1:") and "/?token=" in link and "works once" in done.stderr
    port = int(link.split(":")[2].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", link.split(str(port), 1)[1])
    answer = connection.getresponse()
    assert answer.status == 303 and "HttpOnly" in answer.getheader("set-cookie")
    connection.close()


def test_the_link_asked_for_under_an_agent_is_refused(broker_process: BrokerProcess, short_dir: Path) -> None:
    """`claude-peers dashboard` run by a stand-in agent's shell is refused (exit 4) and says why."""
    agent = FakeAgent(short_dir, "sneaky", "claude", short_dir, dict(broker_process.env)).start()
    try:
        run = run_hook_blocking(agent, "x", command=shlex.join([*installed_command(), "dashboard", "--print"]))
    finally:
        agent.cleanup()
    assert run.status == 4, run.stderr
    assert "refusing to open the dashboard" in run.stderr and f"(pid {agent.pid}) is an agent" in run.stderr
    assert "token=" not in run.stdout
    status = cli(broker_process.env, "log")
    assert "dashboard link refused" in status.stdout
