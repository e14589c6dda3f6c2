"""A real interactive Claude Code in tmux, offline, against a stand-in model API (slow tests, bench).

Seeded as STACK-NOTES says: HOME is the test's directory, ``~/.claude.json`` says the
onboarding is done, the project is trusted and the API key approved. The broker runs at
the default paths under that HOME (``claude-peers install --claude --config-file --hooks``
wrote the MCP server and the hooks). No channels flag: the bridge delivers inline, and the
rewake hook is what wakes an idle session.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from claudepeers.wire.box import json_value, text
from claudepeers.hooks.amp_socket import AmpSocket

API_KEY = "sk-ant-test-rewake-0123456789abcdef"
TMUX = "/usr/bin/tmux"


def seed_claude_json(home: Path, cwd: Path) -> None:
    """Mark onboarding done, the project trusted and the API key approved (keeps what install wrote)."""
    path = home / ".claude.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.update(hasCompletedOnboarding=True, hasSeenAutoDefaultNotice=True,
                customApiKeyResponses={"approved": [API_KEY[-20:]], "rejected": []})
    data.setdefault("projects", {}).setdefault(str(cwd), {}).update(hasTrustDialogAccepted=True)
    path.write_text(json.dumps(data, indent=2))


class BrokerView:
    """Blocking questions to the broker (as the operator's CLI, unbound): status and sends."""

    def __init__(self, socket_path: Path) -> None:
        """Talk to the broker at ``socket_path``."""
        self.socket_path = socket_path

    def _call(self, command: str, arguments: list | None = None) -> dict:
        sock = AmpSocket.connect_unix(str(self.socket_path), 5.0)
        try:
            return sock.call(command, arguments or [])
        finally:
            sock.close()

    def peers(self) -> list[dict]:
        """Every peer the broker knows, with ``rewake_pid`` (the armed waiter's pid)."""
        return json_value(self._call("Status"), b"status")["peers"]

    def send(self, to: str, body: str) -> dict[str, str]:
        """Send as the CLI; the answer's text fields."""
        box = self._call("Send", [(b"to", text(to)), (b"body", text(body))])
        return {key.decode(): value.decode() for key, value in box.items() if not key.startswith(b"_")}

    def wait_for_waiter(self, name: str, other_than: int | None = None, timeout: float = 60.0) -> int:
        """The pid of the peer's armed waiter, once there is one (other than ``other_than``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for peer in self.peers():
                pid = peer.get("rewake_pid")
                if peer["name"] == name and peer["state"] == "online" and pid and pid != other_than:
                    return int(pid)
            time.sleep(0.02)  # a question to the broker each time: a few ms apart is enough
        raise TimeoutError(f"no rewake waiter armed for {name} within {timeout} s")


class ClaudeInTmux:
    """One interactive Claude Code session in its own tmux server."""

    def __init__(self, claude: str, home: Path, env: dict[str, str], api_url: str, name: str) -> None:
        """Prepare (not start) a session of the binary ``claude`` under ``home``."""
        self.claude = claude
        self.home = home
        self.socket = home / "tmux.sock"
        self.env = {**env, "HOME": str(home), "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api_url,
                    "DISABLE_AUTOUPDATER": "1", "CLAUDE_PEER_NAME": name, "TERM": "xterm-256color"}
        self.pid: int | None = None

    def start(self) -> "ClaudeInTmux":
        """Start ``claude`` in a detached 200x50 tmux window; remember its pid."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        command = f"cd {shlex.quote(str(self.home))} && exec env {exports} {shlex.quote(self.claude)}"
        subprocess.run([TMUX, "-S", str(self.socket), "new-session", "-d", "-x", "200", "-y", "50", command],
                       check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(self.home)})
        shown = subprocess.run([TMUX, "-S", str(self.socket), "list-panes", "-F", "#{pane_pid}"],
                               check=True, capture_output=True, text=True)
        self.pid = int(shown.stdout.split()[0])
        return self

    def screen(self) -> str:
        """What the pane shows now."""
        done = subprocess.run([TMUX, "-S", str(self.socket), "capture-pane", "-p"], capture_output=True, text=True)
        return done.stdout

    def keys(self, *keys: str) -> None:
        """Type into the session (tmux key names, e.g. ``Enter``)."""
        subprocess.run([TMUX, "-S", str(self.socket), "send-keys", *keys], check=True)

    def descendants(self) -> dict[int, float]:
        """Every process below Claude Code now: pid -> start time (to check by pid later)."""
        assert self.pid is not None
        found: dict[int, float] = {}
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                try:
                    found[child.pid] = child.create_time()
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        return found

    def exit(self, timeout: float = 20.0) -> None:
        """Leave with ``/exit``; wait for the process to end (then end the tmux server)."""
        assert self.pid is not None
        self.keys("Escape")
        self.keys("-l", "/exit")
        time.sleep(0.3)  # the slash-command menu opens on the typed text before Enter picks it
        self.keys("Enter")
        try:
            psutil.Process(self.pid).wait(timeout)
        except psutil.NoSuchProcess:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Kill the tmux server (and with it the session, if still there)."""
        subprocess.run([TMUX, "-S", str(self.socket), "kill-server"], capture_output=True)


def still_running(processes: dict[int, float]) -> list[int]:
    """The pids of ``processes`` (pid -> start time) that still run as the same process."""
    alive = []
    for pid, start in processes.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - start) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(processes: dict[int, float], timeout: float) -> list[int]:
    """Wait until none of ``processes`` runs; the ones still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = still_running(processes)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def environment_path() -> str:
    """A PATH for the agent: this interpreter's bin (claude-peers), then the system's."""
    return f"{Path(os.sys.executable).parent}:/usr/bin:/bin"
