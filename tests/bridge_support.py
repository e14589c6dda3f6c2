"""Helpers for the bridge's integration tests: fake agents, MCP clients, waiting without sleeps.

A :class:`FakeAgent` is a long-lived process named ``claude`` or ``codex`` (see
``fake_agent.py``); :func:`open_bridge` starts a real ``claudepeers.bridge.main``
as its child, connected to an mcp SDK stdio client (``mode="legacy"``) that collects
``notifications/claude/channel`` through a ``NotificationBinding``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import anyio
import psutil
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client import ClientExtension, NotificationBinding
from twisted.internet.defer import Deferred

HERE = Path(__file__).resolve().parent
CHANNELS_FLAG = ["--dangerously-load-development-channels", "server:claude-peers"]


def asyncio_test(function: Callable[..., Awaitable[Any]]) -> Callable[..., Deferred]:
    """Run an ``async def`` test as an asyncio task on the (asyncio) reactor's loop.

    The mcp SDK and anyio need a real asyncio task; ``ensureDeferred`` does not give one.
    """

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Deferred:
        return Deferred.fromFuture(asyncio.ensure_future(function(*args, **kwargs)))

    return run


class ChannelParams(types.NotificationParams):
    """The params of a ``notifications/claude/channel`` notification."""

    content: str
    meta: dict[str, str]


def transcript_line(content: str, meta: dict[str, str], server: str = "claude-peers") -> bytes:
    """The transcript line Claude Code writes when it accepts a channel message (its
    ``queue-operation`` enqueue, as 2.1.197 and 2.1.332 write it)."""
    attributes = "".join(f' {key}="{value}"' for key, value in meta.items())
    tag = f'<channel source="{server}"{attributes}>\n{content}\n</channel>'
    entry = {"type": "queue-operation", "operation": "enqueue", "timestamp": "2026-12-01T00:00:00.000Z",
             "sessionId": "test", "content": tag}
    return json.dumps(entry).encode() + b"\n"


def transcript_path(home: Path, cwd: Path, session_id: str) -> Path:
    """Where Claude Code keeps the transcript of a session started in ``cwd``."""
    folder = "".join(ch if ch.isalnum() else "-" for ch in str(cwd))
    return home / ".claude" / "projects" / folder / f"{session_id}.jsonl"


class Inbox:
    """Channel notifications received by one client, with a way to wait for them.

    With a ``transcript`` the client stands in for Claude Code accepting the channel: each
    notification is written there as Claude Code writes it (the bridge's evidence). Without
    one it is a Claude Code that skipped the channel: it receives the notification and
    shows nothing.
    """

    def __init__(self, transcript: Path | None = None) -> None:
        self.items: list[ChannelParams] = []
        self.transcript = transcript
        self._changed = asyncio.Event()

    async def receive(self, params: ChannelParams) -> None:
        self.items.append(params)
        if self.transcript is not None:
            self.transcript.parent.mkdir(parents=True, exist_ok=True)
            with open(self.transcript, "ab") as handle:
                handle.write(transcript_line(params.content, params.meta))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ChannelParams]:
        """Wait until at least ``count`` notifications arrived; return them all."""
        with anyio.fail_after(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


class ChannelWatch(ClientExtension):
    """Binds ``notifications/claude/channel`` to an :class:`Inbox`."""

    identifier = "com.example/claude-peers-tests"

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [NotificationBinding(method="notifications/claude/channel", params_type=ChannelParams,
                                    handler=self._inbox.receive)]


@dataclass
class FakeAgent:
    """One stand-in agent session (a process named claude or codex)."""

    #: the stand-in agent program, copied to an executable named ``claude``/``codex``
    SCRIPT = "fake_agent.py"

    base: Path
    name: str
    kind: str
    cwd: Path
    env: dict[str, str]
    channels: bool = False
    #: False: a Claude Code that skips the channel (gate off, -p, ...): it writes no transcript line.
    accepts_channel: bool = True
    process: subprocess.Popen | None = None
    #: argv after the program, e.g. ``["app-server", "--listen", "unix://"]`` for Codex's daemon
    args: list[str] = field(default_factory=list)
    bridge_pids: list[int] = field(default_factory=list)
    #: A command the agent runs under (a pid namespace: ``unshare --pid --fork ...``).
    wrapper: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.base / f"a-{self.name}.sock"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def session_id(self) -> str:
        """The agent's session id (Claude Code passes it to its MCP servers)."""
        return f"00000000-0000-4000-8000-{abs(hash((str(self.base), self.name))) % 10**12:012d}"

    @property
    def transcript(self) -> Path:
        """Where this session's transcript is (HOME is the test's directory)."""
        return transcript_path(Path(self.env["HOME"]), self.cwd, self.session_id)

    def start(self) -> "FakeAgent":
        """Write the ``claude``/``codex`` executable and start it; wait until it listens."""
        bin_dir = self.base / f"bin-{self.name}"
        bin_dir.mkdir(parents=True, exist_ok=True)
        script = bin_dir / self.kind
        script.write_text(f"#!{sys.executable}\n" + (HERE / self.SCRIPT).read_text())
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.env = {**self.env, "CP_AGENT_SOCKET": str(self.socket_path), "CLAUDE_PEER_NAME": self.name,
                    "CLAUDE_CODE_SESSION_ID": self.session_id}
        log = open(self.base / f"agent-{self.name}.log", "ab")
        self.process = subprocess.Popen(
            [*self.wrapper, str(script), *self.args, *(CHANNELS_FLAG if self.channels else [])],
            cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
        )
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == b"READY", f"fake agent {self.name} did not start: {self.log_text()}"
        return self

    def log_text(self) -> str:
        """What the agent and its bridges wrote to stderr."""
        path = self.base / f"agent-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the agent (by pid) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def cleanup(self) -> None:
        """End the agent and any bridge it started that is still running."""
        self.kill()
        for pid in self.bridge_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def started_agents(broker: Any, agent_class: type[FakeAgent] = FakeAgent, default_kind: str = "claude",
                   **env: str) -> Iterator[Callable[..., Any]]:
    """A function that starts stand-in agents in ``broker``'s environment (plus ``env``), every
    one ended (by pid) when the block ends, its log printed (pytest shows it when a test failed).

    The function takes the agent's ``name`` and, optionally, ``kind`` (``default_kind``),
    ``channels``, ``cwd`` (the broker's folder), ``accepts`` (False: a Claude Code that skips
    the channel) and ``args`` (argv after the program).
    """
    started: list[FakeAgent] = []

    def make(name: str, kind: str | None = None, channels: bool = False, cwd: Path | None = None,
             accepts: bool = True, args: list[str] | None = None) -> FakeAgent:
        agent = agent_class(broker.base, name, kind or default_kind, cwd or broker.base, {**broker.env, **env},
                            channels, args=list(args or []))
        agent.accepts_channel = accepts
        started.append(agent)  # before it starts: a start that fails half-way is ended too
        return agent.start()

    try:
        yield make
    finally:
        for agent in started:
            agent.cleanup()
            print(f"--- stderr of agent {agent.name} and its bridges ---\n{agent.log_text()[-6000:]}")


@dataclass
class BridgeClient:
    """An MCP client session with one bridge."""

    client: Client
    channel: Inbox
    pidfile: Path

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        """Call a tool; the result's text is ``text_of(result)``."""
        return await self.client.call_tool(tool, arguments or {})

    async def text(self, tool: str, arguments: dict[str, Any] | None = None) -> str:
        """Call a tool that must succeed; return its text."""
        result = await self.call(tool, arguments)
        assert not result.is_error, text_of(result)
        return text_of(result)

    async def bridge_pid(self, timeout: float = 5.0) -> int:
        """The pid of the bridge process (written by the relay)."""
        with anyio.fail_after(timeout):
            while not self.pidfile.exists():
                await anyio.sleep(0.01)  # polling a file another process writes
        return int(self.pidfile.read_text())


async def ready(*bridges: BridgeClient, patience: float = 0.0) -> None:
    """Wait until all these bridges are registered (they start up in parallel).

    A bridge answers "not reachable" after waiting 5 s for the broker; with ``patience``
    such answers are retried until that many seconds have passed (for an autostarted
    broker on a busy machine).
    """

    async def registered(bridge: BridgeClient) -> None:
        deadline = time.monotonic() + patience
        while True:
            result = await bridge.call("whoami")
            if not result.is_error:
                return
            assert "not reachable" in text_of(result) and time.monotonic() < deadline, text_of(result)

    async with anyio.create_task_group() as group:
        for bridge in bridges:
            group.start_soon(registered, bridge)


def text_of(result: types.CallToolResult) -> str:
    """The text of a tool result."""
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


_counter = iter(range(1_000_000))


@asynccontextmanager
async def open_bridge(
    agent: FakeAgent,
    client_name: str = "claude-code",
    args: list[str] | None = None,
    registered: bool = True,
    env: dict[str, str] | None = None,
) -> AsyncIterator[BridgeClient]:
    """Start a bridge under ``agent`` and an MCP client session with it.

    With ``registered`` (the default) it returns once the bridge is registered with the
    broker (a ``whoami`` succeeded), so that others can address it at once.
    """
    pidfile = agent.base / f"bridge-{agent.name}-{next(_counter)}.pid"
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(HERE / "bridge_relay.py"), str(agent.socket_path), str(pidfile), *(args or [])],
        env={**agent.env, **(env or {})},
        cwd=str(agent.cwd),
    )
    inbox = Inbox(agent.transcript if agent.channels and agent.accepts_channel else None)
    client = Client(
        params,
        mode="legacy",
        client_info=types.Implementation(name=client_name, version="test"),
        extensions=[ChannelWatch(inbox)],
        read_timeout_seconds=20,
    )
    async with client:
        session = BridgeClient(client, inbox, pidfile)
        if registered:
            await session.text("whoami")
        if pidfile.exists():
            agent.bridge_pids.append(int(pidfile.read_text()))
        yield session
        if pidfile.exists():
            agent.bridge_pids.append(int(pidfile.read_text()))


def body_of(content: str) -> str:
    """The body of one framed message (its bar-prefixed lines, bar removed); a channel
    notification's content is the body itself."""
    if not any(line.startswith("\u2502 ") for line in content.split("\n")):
        return content
    return "\n".join(line[2:] for line in content.split("\n") if line.startswith("\u2502 "))


def ids_in(text: str) -> set[str]:
    """The peer ids listed by list_peers."""
    return set(re.findall(r"^ID: (\S+)$", text, re.MULTILINE))


async def my_id(bridge: Any) -> str:
    """The peer id the bridge's whoami names."""
    return (await bridge.text("whoami")).split("ID: ")[1].split("\n")[0]


async def wait_gone(pid: int, timeout: float = 5.0) -> float:
    """Wait until process ``pid`` has ended (a zombie counts); return how long it took.

    The bridge is not our child, so there is nothing to wait on but its state: poll it,
    with a bounded deadline.
    """
    started = time.monotonic()
    with anyio.fail_after(timeout):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            await anyio.sleep(0.005)
    return time.monotonic() - started


def git(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run git with a fixed identity; the completed process."""
    return subprocess.run(["git", *args], cwd=cwd, check=check, capture_output=True, text=True,
                          env={**(env or os.environ), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
