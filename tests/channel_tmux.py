"""A real, interactive Claude Code session in tmux, offline, for the slow tests and the bench.

Claude Code runs in its own tmux server (``tmux -S SOCKET``) under a HOME of the test's
own, seeded so that it starts without any login or network (STACK-NOTES, "Agent CLIs as
people run them now"): onboarding done, the folder trusted, the API key approved, and,
unless a test wants the channels gate off, the ``tengu_harbor`` feature cached. Its model is
a :class:`~agent_standins.StandInApi`; its one MCP server is ``claude-peers mcp`` of this
checkout, talking to the test's broker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import ROOT

TMUX = "/usr/bin/tmux"
API_KEY = "sk-ant-test-0123456789abcdefghijklmnop"
CLAUDE = os.environ.get("CLAUDE_PEERS_TEST_CLAUDE") or shutil.which("claude")
CLAUDE_NEW = os.environ.get("CLAUDE_PEERS_TEST_CLAUDE_NEW")
HOW_TO_GET = ("set CLAUDE_PEERS_TEST_CLAUDE (and CLAUDE_PEERS_TEST_CLAUDE_NEW for the newest) to a claude "
              "binary, e.g. node_modules/.bin/claude after `npm install @anthropic-ai/claude-code@2.1.332`")


def seed_home(home: Path, cwd: Path, gate: bool = True) -> None:
    """Write ``~/.claude.json`` so that Claude Code starts offline without asking anything."""
    config = {
        "hasCompletedOnboarding": True,
        "hasSeenAutoDefaultNotice": True,
        "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
        "projects": {str(cwd): {"hasTrustDialogAccepted": True, "allowedTools": []}},
    }
    if gate:
        # tengu_harbor: channels; tengu_harbor_permissions: the permission relay to channels.
        config["cachedGrowthBookFeatures"] = {"tengu_harbor": True, "tengu_harbor_permissions": True}
    (home / ".claude.json").write_text(json.dumps(config))


def add_bridge(home: Path, env: dict[str, str], server: str = "claude-peers") -> None:
    """Configure ``claude-peers mcp`` (this checkout's) as the user's MCP server ``server``."""
    path = home / ".claude.json"
    config = json.loads(path.read_text())
    passed = {name: env[name] for name in ("CLAUDE_PEERS_SOCKET", "CLAUDE_PEERS_DB", "CLAUDE_PEERS_NO_AUTOSTART",
                                           "PYTHONPATH", "CLAUDE_PEERS_LOG_LEVEL",
                                           "CLAUDE_PEERS_CHANNEL_CONFIRM_SECONDS") if name in env}
    config["mcpServers"] = {server: {"type": "stdio", "command": sys.executable,
                                     "args": ["-m", "claudepeers", "mcp"], "env": passed}}
    path.write_text(json.dumps(config))


@dataclass
class ClaudeSession:
    """One interactive ``claude`` in a tmux server of its own."""

    binary: str
    home: Path
    cwd: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    socket: Path | None = None
    pid: int | None = None

    def start(self, api_url: str, answer_warning: bool = True, timeout: float = 40.0) -> "ClaudeSession":
        """Start ``claude`` and wait for its prompt; Enter accepts the dev-channels warning."""
        self.socket = self.home / "tmux.sock"
        env = {**self.env, "HOME": str(self.home), "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api_url,
               "DISABLE_AUTOUPDATER": "1", "TERM": "xterm-256color"}
        exports = " ".join(f"{name}={_quote(value)}" for name, value in env.items()
                           if name not in ("TMUX", "TMUX_PANE"))
        command = f"cd {_quote(str(self.cwd))} && exec env -i {exports} {_quote(self.binary)} " + " ".join(
            _quote(arg) for arg in self.args)
        subprocess.run([TMUX, "-S", str(self.socket), "new-session", "-d", "-x", "200", "-y", "50",
                        "sh", "-c", command], check=True, env={"PATH": "/usr/bin:/bin"})
        pane = subprocess.run([TMUX, "-S", str(self.socket), "list-panes", "-F", "#{pane_pid}"],
                              capture_output=True, text=True, check=True).stdout.split()
        self.pid = int(pane[0])
        deadline = time.monotonic() + timeout
        warned = False
        while time.monotonic() < deadline:
            screen = self.screen()
            if answer_warning and not warned and ("development channels" in screen.lower()
                                                  or "I am using this for local development" in screen):
                self.keys("Enter")
                warned = True
            elif "\u276f" in screen or "> " in screen.splitlines()[-1:][0:1]:
                if not answer_warning or warned or "development channels" not in screen.lower():
                    return self
            time.sleep(0.2)  # watching another program's screen: nothing to subscribe to
        raise TimeoutError(f"claude showed no prompt within {timeout} s:\n{self.screen()}")

    def screen(self) -> str:
        """The visible pane text."""
        assert self.socket is not None
        done = subprocess.run([TMUX, "-S", str(self.socket), "capture-pane", "-p"], capture_output=True, text=True)
        return done.stdout

    def keys(self, *keys: str) -> None:
        """Type into the pane (tmux key names or literal text)."""
        assert self.socket is not None
        subprocess.run([TMUX, "-S", str(self.socket), "send-keys", *keys], check=True)

    def type_prompt(self, text: str) -> None:
        """Type a prompt and submit it."""
        self.keys("-l", text)
        time.sleep(0.3)  # the TUI debounces typed input before Enter submits it
        self.keys("Enter")

    def stop(self) -> None:
        """End claude by its pid (then the tmux server by its own socket)."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        if self.socket is not None:
            subprocess.run([TMUX, "-S", str(self.socket), "kill-server"], capture_output=True)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _quote(text: str) -> str:
    """Single-quote for sh."""
    return "'" + text.replace("'", "'\\''") + "'"


def project_dir(home: Path, cwd: Path) -> Path:
    """Where Claude Code keeps the transcripts of sessions started in ``cwd``."""
    return home / ".claude" / "projects" / "".join(ch if ch.isalnum() else "-" for ch in str(cwd))


def root_path() -> Path:
    """This checkout (for PYTHONPATH)."""
    return ROOT


@dataclass
class Scenario:
    """A broker, a stand-in model API and one interactive Claude Code with claude-peers installed.

    ``gate`` seeds the channels feature flag; ``args`` are claude's (the channels flag);
    ``extra_env`` reaches claude (e.g. DISABLE_TELEMETRY). With ``hooks`` the prompt hooks are
    installed, so mail that is not pushed is shown with the next prompt a person types.
    """

    base: Path
    binary: str
    args: list[str]
    gate: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    hooks: bool = True
    #: Answers the stand-in Messages API gives (``StandInApi(respond_messages=...)``).
    respond_messages: Any = None
    broker: object = None
    api: object = None
    session: ClaudeSession | None = None

    def start(self) -> "Scenario":
        """Broker, API, install, claude; returns once claude's bridge is registered."""
        from agent_standins import StandInApi
        from cli_support import cli, cli_json
        from conftest import BrokerProcess, broker_env

        work = self.base / "work"
        work.mkdir()
        env = broker_env(self.base, CLAUDE_PEERS_LOG_LEVEL="info")
        self.broker = BrokerProcess(self.base, env).start()
        self.api = StandInApi(respond_messages=self.respond_messages)
        seed_home(self.base, work, gate=self.gate)
        installed = cli(env, "install", "--claude", *(["--hooks"] if self.hooks else []))
        assert installed.returncode == 0, installed.stderr
        # The bridge's log goes to a file of the test (Claude Code keeps MCP stderr to itself).
        config_path = self.base / ".claude.json"
        config = json.loads(config_path.read_text())
        server = config["mcpServers"]["claude-peers"]
        server["args"] = ["-c", f'exec {_quote(server["command"])} mcp 2>>{_quote(str(self.base / "bridge.log"))}']
        server["command"] = "/bin/sh"
        config_path.write_text(json.dumps(config))
        self.env = env
        self.session = ClaudeSession(self.binary, self.base, work, {**env, **self.extra_env},
                                     self.args + ["--debug-file", str(self.base / "claude-debug.log")])
        self.session.start(self.api.url)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            peers = cli_json(env, "peers", "--json", "--online")
            if peers:
                self.peer = peers[0]
                return self
        raise TimeoutError("claude's bridge did not register within 30 s")

    def channel_decided(self, timeout: float = 30.0) -> str:
        """Wait until Claude Code's debug log says whether it registered our channel (it
        decides seconds after the MCP connection, once its plugins have loaded); the line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.debug_log().splitlines():
                if 'MCP server "claude-peers": Channel notifications' in line:
                    return line
            time.sleep(0.1)  # another program's log file: nothing to subscribe to
        raise TimeoutError("Claude Code logged no channel decision")

    def bridge_log(self) -> str:
        """What claude's claude-peers bridges logged."""
        path = self.base / "bridge.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def debug_log(self) -> str:
        """Claude Code's own debug log (its channel decision is there)."""
        path = self.base / "claude-debug.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Claude, the API and the broker, each by its own handle."""
        if self.session is not None:
            self.session.stop()
        if self.api is not None:
            self.api.close()  # type: ignore[attr-defined]
        if self.broker is not None:
            self.broker.stop()  # type: ignore[attr-defined]
