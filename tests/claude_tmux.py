"""A real interactive Claude Code in tmux, offline, against a stand-in model API (slow tests, bench).

What is Claude Code's own (the tmux driving is ``agent_tmux.py``): its HOME is the test's
directory, seeded so that it starts with no login or network (STACK-NOTES, "Agent CLIs as
people run them now"): ``~/.claude.json`` says the onboarding is done, the folder trusted,
the API key approved and, unless a test wants the channels gate off, the ``tengu_harbor``
features cached. Its model is a :class:`~agent_standins.StandInApi`. :class:`Scenario`
adds a broker and ``claude-peers install --claude`` of this checkout.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from agent_tmux import Tmux, descendants, end, quote, started, wait_gone

API_KEY = "sk-ant-test-0123456789abcdefghijklmnop"
PROMPT = "\u276f"
#: The flag that makes Claude Code listen to our channel (as a development channel).
DEV_FLAG = ["--dangerously-load-development-channels", "server:claude-peers"]


def own_etc_prefix(home: Path, managed_settings: dict) -> str:
    """A shell prefix that runs the command after it in its own user and mount namespace,
    where ``/etc`` is an overlay holding ``/etc/claude-code/managed-settings.json`` =
    ``managed_settings`` (under ``home``).

    Claude Code reads an organisation's managed settings only from that path (both builds
    ignore CLAUDE_CODE_MANAGED_SETTINGS_PATH), and the machine's ``/etc`` is shared with other
    tests, so it is changed only where this one claude can see it. The pid stays claude's:
    ``unshare`` and ``sh`` exec into it.
    """
    upper, work = home / "etc-upper", home / "etc-work"
    (upper / "claude-code").mkdir(parents=True)
    work.mkdir()
    (upper / "claude-code" / "managed-settings.json").write_text(json.dumps(managed_settings))
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    return "unshare --user --map-root-user --mount sh -c " + quote(mount + ' && exec "$0" "$@"') + " "


@cache
def own_etc_works() -> bool:
    """Whether this machine lets an unprivileged process overlay ``/etc`` in its own
    namespaces (user namespaces on, Linux 5.11 or later), as :func:`own_etc_prefix` does."""
    with tempfile.TemporaryDirectory(prefix="cp-etc-") as home:
        command = own_etc_prefix(Path(home), {}) + "test -f /etc/claude-code/managed-settings.json"
        return subprocess.run(["sh", "-c", command], capture_output=True).returncode == 0


def seed_home(home: Path, cwd: Path, gate: bool = True) -> None:
    """Write ``~/.claude.json`` so that Claude Code starts offline without asking anything
    (keeping what ``claude-peers install`` wrote there)."""
    path = home / ".claude.json"
    config: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    config.update(hasCompletedOnboarding=True, hasSeenAutoDefaultNotice=True,
                  customApiKeyResponses={"approved": [API_KEY[-20:]], "rejected": []})
    project = config.setdefault("projects", {}).setdefault(str(cwd), {})
    project.update(hasTrustDialogAccepted=True)
    project.setdefault("allowedTools", [])
    if gate:
        # tengu_harbor: channels; tengu_harbor_permissions: the permission relay to channels.
        config["cachedGrowthBookFeatures"] = {"tengu_harbor": True, "tengu_harbor_permissions": True}
    path.write_text(json.dumps(config, indent=2))


@dataclass
class ClaudeSession:
    """One interactive ``claude`` (the binary ``binary``) under ``home``, in ``cwd`` (``home`` by default)."""

    binary: str
    home: Path
    env: dict[str, str]
    cwd: Path | None = None
    args: list[str] = field(default_factory=list)
    #: An organisation's managed settings, seen by this claude only (:func:`own_etc_prefix`).
    managed_settings: dict | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        self.tmux = Tmux(self.home / "tmux.sock", "claude")
        self._started: dict[int, float] = {}  # claude's pid -> start time, once it runs

    def start(self, api_url: str, timeout: float = 40.0) -> "ClaudeSession":
        """Start ``claude`` and wait for its prompt; Enter accepts the dev-channels warning."""
        # ANTHROPIC_VERTEX_BASE_URL is read only with CLAUDE_CODE_USE_VERTEX=1 (a test's extra env):
        # the stand-in answers Vertex's model paths too.
        env = {**self.env, "HOME": str(self.home), "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api_url,
               "ANTHROPIC_VERTEX_BASE_URL": api_url, "DISABLE_AUTOUPDATER": "1", "TERM": "xterm-256color"}
        exports = " ".join(f"{name}={quote(value)}" for name, value in env.items() if name not in ("TMUX", "TMUX_PANE"))
        prefix = own_etc_prefix(self.home, self.managed_settings) if self.managed_settings is not None else ""
        command = f"cd {quote(str(self.cwd or self.home))} && exec env -i {exports} {prefix}{quote(self.binary)} " + \
            " ".join(quote(arg) for arg in self.args)
        self.pid = self.tmux.open(["sh", "-c", command])
        self._started = started(self.pid)
        deadline = time.monotonic() + timeout
        warned = False
        while time.monotonic() < deadline:
            screen = self.screen()
            warning = "development channels" in screen.lower() or "I am using this for local development" in screen
            if warning and not warned:
                self.keys("Enter")
                warned = True
            elif not warning and (PROMPT in screen or screen.splitlines()[-1:] == ["> "]):
                return self
            time.sleep(0.2)  # watching another program's screen: nothing to subscribe to
        raise TimeoutError(f"claude showed no prompt within {timeout} s:\n{self.screen()}")

    def screen(self) -> str:
        """The visible pane text."""
        return self.tmux.screen()

    def keys(self, *keys: str) -> None:
        """Type into the pane (tmux key names or ``-l`` and literal text)."""
        self.tmux.keys(*keys)

    def type_prompt(self, text: str) -> None:
        """Type a prompt and submit it."""
        self.tmux.type(text)

    def descendants(self) -> dict[int, float]:
        """Every process below Claude Code now: pid -> start time."""
        assert self.pid is not None
        return descendants(self.pid)

    def exit(self, timeout: float = 20.0) -> None:
        """Leave as a person does, with ``/exit``; wait for claude to end, then :meth:`stop`."""
        self.keys("Escape")
        self.keys("-l", "/exit")
        time.sleep(0.3)  # the slash-command menu opens on the typed text before Enter picks it
        self.keys("Enter")
        wait_gone(self._started, timeout)
        self.stop()

    def stop(self) -> None:
        """End claude by its pid (SIGTERM, then SIGKILL), then the tmux server."""
        end(self._started)
        self.tmux.kill()
        work = self.home / "etc-work" / "work"
        if work.exists():
            work.chmod(0o700)  # the overlay leaves it mode 000, which would stop the test's cleanup


@dataclass
class Scenario:
    """A broker, a stand-in model API and one interactive Claude Code with claude-peers installed.

    ``gate`` seeds the channels feature flag; ``args`` are claude's (the channels flag);
    ``extra_env`` reaches claude (e.g. DISABLE_TELEMETRY), ``managed_settings`` are an
    organisation's (e.g. ``{"channelsEnabled": False}``). With ``hooks`` the prompt hooks are
    installed, so mail that is not pushed is shown with the next prompt a person types.
    """

    base: Path
    binary: str
    args: list[str]
    gate: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    managed_settings: dict | None = None
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
        server["args"] = ["-c", f'exec {quote(server["command"])} mcp 2>>{quote(str(self.base / "bridge.log"))}']
        server["command"] = "/bin/sh"
        config_path.write_text(json.dumps(config))
        self.env = env
        self.session = ClaudeSession(self.binary, self.base, {**env, **self.extra_env}, work,
                                     self.args + ["--debug-file", str(self.base / "claude-debug.log")],
                                     managed_settings=self.managed_settings)
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
