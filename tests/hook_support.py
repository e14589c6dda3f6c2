"""Helpers for the hook tests: a stand-in agent that runs hook commands, and running them.

:class:`HookAgent` is a :class:`bridge_support.FakeAgent` whose executable is
``fake_agent.py``: it starts real bridges (``open_bridge`` works with it unchanged)
and runs ``claude-peers hook <event>`` as its child through ``/bin/sh -c``, with the
hook's JSON on stdin, as Claude Code does.
"""

from __future__ import annotations

import json
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import pytest

from bridge_support import FakeAgent, started_agents
from claudepeers.cli.install import installed_command


@dataclass
class HookRun:
    """What one hook run did."""

    status: int
    stdout: str
    stderr: str
    seconds: float

    def output(self) -> dict[str, Any] | None:
        """The JSON the hook printed (None when it printed nothing)."""
        return json.loads(self.stdout) if self.stdout.strip() else None


class HookAgent(FakeAgent):
    """A fake ``claude``/``codex`` session used to run hook commands."""


@pytest.fixture
def make_agent(broker_process: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., HookAgent]]:
    """Start stand-in agents (able to run hooks) in the broker's environment; end them afterwards.

    The kind is the test module's ``AGENT_KIND`` unless the test names one (default codex).
    """
    with started_agents(broker_process, HookAgent, getattr(request.module, "AGENT_KIND", "codex")) as make:
        yield make


def hook_command(event: str) -> str:
    """The command line ``install --hooks`` writes for ``event``."""
    return shlex.join([*installed_command(), "hook", event])


def payload(event: str, **extra: Any) -> dict[str, Any]:
    """A hook input as Claude Code sends it."""
    return {"session_id": "s-1", "transcript_path": "/dev/null", "cwd": "/tmp",
            "hook_event_name": event, **extra}


def run_hook_blocking(agent: FakeAgent, event: str, data: dict[str, Any] | None = None,
                      env: dict[str, str] | None = None, command: str | None = None) -> HookRun:
    """Run the hook command for ``event`` under ``agent``; block until it has ended."""
    request = {"run": command or hook_command(event), "stdin": json.dumps(data or payload(event)),
               "env": env or {}}
    connection = socket.socket(socket.AF_UNIX)
    connection.settimeout(60)
    try:
        connection.connect(str(agent.socket_path))
        socket.send_fds(connection, [json.dumps(request).encode()], [])
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    finally:
        connection.close()
    assert chunks, f"the fake agent did not run the hook: {agent.log_text()}"
    return HookRun(**json.loads(b"".join(chunks)))


async def run_hook(agent: FakeAgent, event: str, data: dict[str, Any] | None = None,
                   env: dict[str, str] | None = None) -> HookRun:
    """:func:`run_hook_blocking` in a thread, so the test's MCP clients keep running."""
    return await anyio.to_thread.run_sync(lambda: run_hook_blocking(agent, event, data, env))


def hook_log(base: Path) -> str:
    """The hook log in a test's environment (``<base>/run/hooks.log``)."""
    path = base / "run" / "hooks.log"
    return path.read_text() if path.exists() else ""
