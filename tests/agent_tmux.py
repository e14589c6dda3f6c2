"""The one driver of real interactive agent CLIs in tmux, for the slow tests and the benches.

Each agent runs in a tmux server of the test's own (``tmux -S SOCKET``), so ending that
server ends nothing of anyone else's. :class:`Tmux` starts windows, reads their screens and
types into them; the process helpers below check and end the agent's processes by pid and
start time (a reused pid is not the same process). The agent-specific parts are small and
sit beside this module: ``claude_tmux.py`` (Claude Code: a seeded HOME, a session, the
channel scenario) and ``codex_tui.py`` (the Codex TUI: its stand-in model and app-server).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

TMUX = "/usr/bin/tmux"
HAVE_TMUX = os.path.exists(TMUX)

#: The agent binaries under test: the pinned and the newest of each, found by their variables.
CLAUDE = os.environ.get("CLAUDE_PEERS_TEST_CLAUDE") or shutil.which("claude")
CLAUDE_NEW = os.environ.get("CLAUDE_PEERS_TEST_CLAUDE_NEW")
CODEX = os.environ.get("CLAUDE_PEERS_TEST_CODEX") or shutil.which("codex")
CODEX_NEW = os.environ.get("CLAUDE_PEERS_TEST_CODEX_NEW")
HOW_TO_GET_CLAUDE = ("set CLAUDE_PEERS_TEST_CLAUDE (and CLAUDE_PEERS_TEST_CLAUDE_NEW for the newest) to a claude "
                     "binary, e.g. node_modules/.bin/claude after `npm install @anthropic-ai/claude-code@2.1.332`")
#: A screen 200 columns wide, 50 lines high: wide enough that no status line wraps.
WIDTH, HEIGHT = "200", "50"


def quote(text: str) -> str:
    """Single-quote ``text`` for sh."""
    return "'" + text.replace("'", "'\\''") + "'"


def environment_path() -> str:
    """A PATH for an agent: this interpreter's bin (claude-peers), then the system's."""
    return f"{Path(sys.executable).parent}:/usr/bin:/bin"


class Tmux:
    """One tmux server of a test's own, with a session ``name`` whose windows run agents."""

    def __init__(self, socket: Path, name: str = "agents") -> None:
        """A server at ``socket`` (not started until the first :meth:`open`)."""
        self.socket = socket
        self.name = name
        self.windows: list[str] = []

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([TMUX, "-S", str(self.socket), *args], check=check, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin"})

    def open(self, command: list[str], window: str = "main", cwd: Path | None = None) -> int:
        """Run ``command`` in a new window ``window``; the pid of the process it runs."""
        where = ["-c", str(cwd)] if cwd is not None else []
        if not self.windows:
            self._tmux("new-session", "-d", "-x", WIDTH, "-y", HEIGHT, "-s", self.name, "-n", window, *where, *command)
        else:
            self._tmux("new-window", "-d", "-t", self.name, "-n", window, *where, *command)
        self.windows.append(window)
        shown = self._tmux("list-panes", "-t", self._target(window), "-F", "#{pane_pid}")
        return int(shown.stdout.split()[0])

    def _target(self, window: str | None) -> str:
        return f"{self.name}:{window or self.windows[0]}"

    def screen(self, window: str | None = None) -> str:
        """What the window (the first one by default) shows now."""
        return self._tmux("capture-pane", "-p", "-t", self._target(window), check=False).stdout

    def keys(self, *keys: str, window: str | None = None) -> None:
        """Press keys in the window (tmux key names such as ``Enter``, or ``-l`` and literal text)."""
        self._tmux("send-keys", "-t", self._target(window), *keys)

    def type(self, text: str, window: str | None = None) -> None:
        """Type ``text`` and press Enter."""
        self.keys("-l", text, window=window)
        time.sleep(0.3)  # a TUI takes typed text as a burst (and debounces it): Enter must come after
        self.keys("Enter", window=window)

    def wait_for_screen(self, text: str, timeout: float, window: str | None = None) -> str:
        """Wait until the window shows ``text``; the screen then."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(window)
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise TimeoutError(f"window {window or self.windows[0]} never showed {text!r}:\n{screen}")
            time.sleep(0.2)  # another program's terminal screen: there is nothing to wait on

    def kill(self) -> None:
        """End the tmux server (and every window still open)."""
        self._tmux("kill-server", check=False)
        self.windows.clear()


def started(*pids: int) -> dict[int, float]:
    """``{pid: start time}`` of running processes (an ended one is left out)."""
    found = {}
    for pid in pids:
        try:
            found[pid] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            pass
    return found


def descendants(pid: int) -> dict[int, float]:
    """Every process below ``pid`` now: pid -> start time (to check them by pid later)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    return started(*(child.pid for child in children))


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
        time.sleep(0.1)  # other processes' exits: nothing of ours to wait on


def end(processes: dict[int, float], timeout: float = 5.0) -> None:
    """SIGTERM each of ``processes`` still running, then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 0.0)):
        for pid in still_running(processes):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not wait_gone(processes, wait):
            return
