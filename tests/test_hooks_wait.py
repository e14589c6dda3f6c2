"""``claude-peers hook wait`` (the rewake hook) run as Claude Code runs it, against a real broker and bridges.

Each waiter runs under a stand-in ``claude`` whose peer a real bridge registered (inline
delivery: Claude Code without channels), in a thread, as Claude Code runs an
``asyncRewake`` hook in the background. The broker's status names the armed waiter's pid
(from SO_PEERCRED), which the tests compare with the pid the waiter's shell wrote.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import time
from pathlib import Path
from typing import Callable

import anyio
import psutil
import pytest

from bridge_support import asyncio_test, open_bridge, ready
from claudepeers.cli.install import installed_command
from claudepeers.wire.box import json_value
from claudepeers.hooks.amp_socket import AmpSocket
from conftest import BrokerProcess
from hook_support import make_agent  # noqa: F401 - a fixture
from hook_support import HookAgent, HookRun, hook_log, payload, run_hook, run_hook_blocking


#: The kind of agent make_agent starts unless told: Claude Code runs the rewake hook.
AGENT_KIND = "claude"


class Waiter:
    """One ``hook wait`` run in the background under an agent; its shell writes its pid first."""

    pool = concurrent.futures.ThreadPoolExecutor(4)

    def __init__(self, agent: HookAgent, label: str, env: dict[str, str] | None = None) -> None:
        """Start the waiter (``exec``: the pid written is the waiter's own)."""
        self.pidfile = agent.base / f"waiter-{agent.name}-{label}.pid"
        command = f"echo $$ > {shlex.quote(str(self.pidfile))}; exec {shlex.join([*installed_command(), 'hook', 'wait'])}"
        self.future = self.pool.submit(run_hook_blocking, agent, "Stop", payload("Stop"), env, command)

    def pid(self, timeout: float = 10.0) -> int:
        """The waiter's pid, once its shell has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pidfile.exists() and self.pidfile.read_text().strip():
                return int(self.pidfile.read_text())
            time.sleep(0.02)
        raise TimeoutError("the waiter did not start")

    async def result(self, timeout: float = 15.0) -> HookRun:
        """What the waiter did, once it has exited."""
        return await anyio.to_thread.run_sync(lambda: self.future.result(timeout))


def armed_pid(broker: BrokerProcess, name: str) -> int | None:
    """The pid of the waiter the broker holds for peer ``name`` (None when none is armed)."""
    sock = AmpSocket.connect_unix(str(broker.socket_path), 3.0)
    try:
        status = json_value(sock.call("Status"), b"status")
    finally:
        sock.close()
    return next((p.get("rewake_pid") for p in status["peers"] if p["name"] == name), None)


async def until_armed(broker: BrokerProcess, name: str, waiter: Waiter, timeout: float = 10.0) -> int:
    """Wait until the broker holds ``waiter`` as the peer's waiter; its pid."""
    pid = await anyio.to_thread.run_sync(waiter.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await anyio.to_thread.run_sync(armed_pid, broker, name) == pid:
            return pid
        await anyio.sleep(0.05)
    raise TimeoutError(f"no waiter armed for {name}")


@asyncio_test
async def test_an_idle_session_is_woken_with_its_mail_once_and_the_sender_hears_woke(
        make_agent: Callable, broker_process: BrokerProcess) -> None:
    """A waiter armed, then a send: it prints the message to stderr, exits 2, and nothing shows it again."""
    a = make_agent("alpha")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        waiter = Waiter(a, "one")
        await until_armed(broker_process, "alpha", waiter)
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "wake up and review PR 7"})
        assert "woke alpha" in sent, sent
        run = await waiter.result()
        assert (run.status, run.stdout) == (2, "")
        assert run.stderr.count("\u2502 wake up and review PR 7") == 1 and 'from peer "beta"' in run.stderr
        assert await ca.text("check_messages") == "No new messages."
        assert (await run_hook(a, "UserPromptSubmit")).stdout == ""
        assert "woke peer" in hook_log(broker_process.base)


@asyncio_test
async def test_a_newer_waiter_replaces_the_older_which_exits_0(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """One waiter per session: the second takes over, the first exits 0 at once and prints nothing;
    mail already waiting wakes the next waiter at once."""
    a = make_agent("alpha")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        first = Waiter(a, "first")
        await until_armed(broker_process, "alpha", first)
        second = Waiter(a, "second")
        old = await first.result(timeout=10)
        assert (old.status, old.stdout, old.stderr) == (0, "", "")
        await until_armed(broker_process, "alpha", second)
        await cb.text("send_message", {"to_id": "alpha", "message": "for the newest"})
        assert (await second.result()).status == 2
        # Mail the bridge holds while no waiter runs is handed to the next one as it starts.
        assert "queued" in await cb.text("send_message", {"to_id": "alpha", "message": "sent before"})
        late = await Waiter(a, "late").result()
        assert late.status == 2 and "\u2502 sent before" in late.stderr
        assert await ca.text("check_messages") == "No new messages."


@asyncio_test
async def test_channel_mail_never_wakes_and_the_waiter_leaves_before_its_timeout(make_agent: Callable) -> None:
    """Claude with a channel: a pushed message was shown, so the waiter wakes nothing; it exits 0 at its time."""
    a = make_agent("alpha", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "pushed once"})
        [note] = await ca.channel.wait_for(1)
        run = await Waiter(a, "channel", env={"CLAUDE_PEERS_REWAKE_SECONDS": "1.5"}).result()
        assert (run.status, run.stdout, run.stderr) == (0, "", "")
        assert 1.4 < run.seconds < 10


@asyncio_test
async def test_the_waiter_exits_when_its_agent_ends(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """The agent process dies (as 2.1.197 leaves its Stop waiters behind): the waiter, by pid, is gone soon after."""
    a = make_agent("alpha")
    async with open_bridge(a, "claude-code", registered=False) as ca:
        await ready(ca)
        waiter = Waiter(a, "orphan")
        pid = await until_armed(broker_process, "alpha", waiter)
        process = psutil.Process(pid)
        a.kill()
        await anyio.to_thread.run_sync(lambda: process.wait(5))
        assert not process.is_running()
        with pytest.raises(Exception):  # the agent that ran it is gone: no report comes back
            await waiter.result(timeout=5)


def test_print_mode_never_waits(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``claude -p`` (asyncRewake hooks block there) the waiter returns 0 without even connecting."""
    import io

    from claudepeers.common.agents import AgentProcess
    from claudepeers.hooks import wait
    from claudepeers.common.settings import Settings

    printing = AgentProcess(1, 0.0, "claude-code", ("claude", "-p", "hello"))
    monkeypatch.setattr(wait.agents, "session_of", lambda pid: printing)
    settings = Settings.from_env({"HOME": str(short_dir), "CLAUDE_PEERS_SOCKET": str(short_dir / "none.sock")})
    notes: list[str] = []
    assert wait.run({}, settings, io.StringIO(), notes.append, 60.0) == 0
    assert notes == []
