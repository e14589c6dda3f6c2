"""The real interactive Codex TUI in tmux against a stand-in Responses API (slow tests, bench).

What is Codex's own (the tmux driving is ``agent_tmux.py``): Codex is configured under a
temporary HOME (``$HOME/.codex``): the stand-in model provider, the project trusted, ``claude-peers install --codex`` and our tools approved, so nothing
asks the person anything. The stand-in plays a model that does what our texts ask:

- a prompt ``BIND <name>`` makes it call ``set_name`` (the first tool call names the
  thread to its bridge, which then registers);
- a queued notice (``[claude-peers] N new peer messages ...``) makes it call
  ``check_messages``; the next request carries the messages;
- anything else is answered "done".

Every process is ended by pid: the TUIs with the tmux server, then the app-server daemon
(``codex app-server daemon stop``, then SIGKILL for what is left of this CODEX_HOME).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from agent_standins import StandInApi, streamed_function_call
from agent_tmux import Tmux, end, wait_gone
from cli_support import cli

NOTICE_MARK = "[claude-peers]"
APPROVED_TOOLS = ("set_name", "check_messages", "whoami", "list_peers", "send_message")


def _last_user_text(request: dict) -> str:
    """The text of the person's (or a queued) prompt this request answers, '' after a tool call.

    Codex puts an ``<environment_context>`` user item around the prompt; that is skipped.
    """
    for item in reversed(request.get("input") or []):
        if item.get("type") in ("function_call", "function_call_output"):
            return ""
        if item.get("type") == "message" and item.get("role") == "user":
            text = " ".join(part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict))
            if not text.startswith("<"):
                return text
    return ""


def _our_namespace(request: dict) -> str | None:
    """The namespace Codex lists our MCP tools under (``mcp__claude_peers``, as it names it)."""
    for tool in request.get("tools") or []:
        if tool.get("type") == "namespace" and any(t.get("name") == "check_messages" for t in tool.get("tools", [])):
            return tool["name"]
    return None


def respond(number: int, request: dict) -> bytes | None:
    """The stand-in model's choice for one request (see the module docstring)."""
    namespace = _our_namespace(request)
    text = _last_user_text(request)
    if namespace is None or not text:
        return None
    if text.startswith("BIND "):
        return streamed_function_call(number, "set_name", {"name": text.split()[1]}, namespace)
    if NOTICE_MARK in text:
        return streamed_function_call(number, "check_messages", {}, namespace)
    return None


def standin_provider(config: str, api_url: str) -> str:
    """Codex's ``config.toml`` text ``config`` with the stand-in model provider at ``api_url`` chosen."""
    return (f'model_provider = "standin"\nmodel = "standin-model"\n\n{config}\n'
            f'[model_providers.standin]\nname = "standin"\nbase_url = "{api_url}/v1"\nwire_api = "responses"\n')


class CodexTuis:
    """Interactive Codex sessions of one HOME, each in a tmux window, and their app-server."""

    def __init__(self, codex: str, env: dict[str, str], base: Path) -> None:
        self.codex = codex
        self.base = base
        self.codex_home = base / ".codex"
        self.env = {**env, "CODEX_HOME": str(self.codex_home)}
        self.tmux = Tmux(base / "tmux.sock", "cq")
        self.api = StandInApi(respond=respond)
        self.seen_bridges: dict[int, float] = {}
        #: The TUI's process in each window.
        self.pids: dict[str, int] = {}

    def configure(self) -> None:
        """Install claude-peers for Codex, then the stand-in provider, trust and approvals."""
        installed = cli(self.env, "install", "--codex")
        assert installed.returncode == 0, installed.stderr
        config = self.codex_home / "config.toml"
        approvals = "".join(f'\n[mcp_servers.claude-peers.tools.{tool}]\napproval_mode = "approve"\n'
                            for tool in APPROVED_TOOLS)
        config.write_text(standin_provider(config.read_text() + approvals, self.api.url)
                          + f'\n[projects."{self.base}"]\ntrust_level = "trusted"\n')

    def open(self, window: str) -> None:
        """Start one TUI in a new tmux window and wait for its prompt."""
        keep = {k: self.env[k] for k in ("HOME", "PATH", "CODEX_HOME", "CLAUDE_PEERS_SOCKET", "CLAUDE_PEERS_DB")
                if k in self.env}
        command = ["env", "-i", *[f"{k}={v}" for k, v in keep.items()], "TERM=xterm-256color",
                   "OPENAI_API_KEY=sk-test", self.codex]
        self.pids[window] = self.tmux.open(command, window, cwd=self.base)
        self.tmux.wait_for_screen("Ask Codex", 60, window)

    def screen(self, window: str) -> str:
        """What the window shows now."""
        return self.tmux.screen(window)

    def composer(self, window: str) -> str:
        """The prompt being typed (the last ``›`` line on the screen)."""
        lines = [line for line in self.screen(window).splitlines() if line.startswith("\u203a ")]
        return lines[-1][2:].strip() if lines else ""

    def prompt(self, window: str, text: str, timeout: float = 90) -> dict:
        """Submit ``text`` and return the model request (with tools) that answers it.

        While the thread's MCP servers start, the TUI keeps Enter for later ("tab to queue
        message"): Enter is pressed again until the prompt goes out.
        """
        seen = len(self.api.requests)
        self.tmux.type(text, window)
        deadline = time.monotonic() + timeout
        while True:
            try:
                request, _ = self.api.wait_for_text(text, 5, after=seen)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                if self.composer(window) == text:
                    self.tmux.keys("Enter", window=window)
                elif text not in self.screen(window):
                    self.tmux.type(text, window)
                continue
            seen = self.api.requests.index(request) + 1
            if request.get("tools"):  # not the TUI's title request, which repeats the prompt
                return request

    def bind(self, window: str, name: str) -> None:
        """Make the thread's first tool call (set_name), so its bridge registers as ``name``."""
        for _ in range(10):
            request = self.prompt(window, f"BIND {name}")
            if _our_namespace(request) is not None:
                break
            # The TUI opens its thread at once and starts MCP servers with it; a prompt
            # that goes out before our tools are listed runs without them.
            self.tmux.wait_for_screen("Ask Codex", 30, window)
            time.sleep(1.0)
        self.api.wait_for_text(f"Your peer name is now {name}.", 60)  # set_name's result went back
        self.remember_bridges()

    def app_servers(self) -> list[psutil.Process]:
        """The app-server processes of this CODEX_HOME."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and cmdline[0].startswith(str(self.codex_home)) and "app-server" in cmdline:
                found.append(proc)
        return found

    def bridges(self) -> list[psutil.Process]:
        """The ``claude-peers mcp`` processes under this HOME's app-servers."""
        found = []
        for server in self.app_servers():
            try:
                for child in server.children(recursive=True):
                    if "mcp" in child.cmdline() and any("claude-peers" in arg or "claudepeers" in arg
                                                        for arg in child.cmdline()):
                        found.append(child)
            except psutil.Error:
                continue
        return found

    def remember_bridges(self) -> None:
        """Note every bridge seen (pid and start), to check later that none is left."""
        for bridge in self.bridges():
            try:
                self.seen_bridges[bridge.pid] = bridge.create_time()
            except psutil.Error:
                continue

    def quit(self, window: str, timeout: float = 15.0) -> None:
        """The person quits one TUI with Ctrl+C (pressed again if the first only cleared the prompt)."""
        pid = self.pids.pop(window)
        deadline = time.monotonic() + timeout
        while psutil.pid_exists(pid) and _status(pid) != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the TUI in window {window} did not exit")
            try:
                self.tmux.keys("C-c", window=window)
            except subprocess.CalledProcessError:  # the window closed as the TUI exited
                pass
            try:
                psutil.Process(pid).wait(1.0)
            except (psutil.TimeoutExpired, psutil.NoSuchProcess):
                pass

    def exit_all(self) -> None:
        """The person quits every TUI; then the daemon is stopped, as at logout."""
        self.tmux.kill()
        subprocess.run([self.codex, "app-server", "daemon", "stop"], env=self.env, capture_output=True, timeout=30)

    def left_over(self, timeout: float = 5.0) -> list[int]:
        """Bridges seen during the test that still run after ``timeout`` seconds."""
        return wait_gone(self.seen_bridges, timeout)

    def close(self) -> None:
        """End everything of this HOME, by pid."""
        self.exit_all()
        for proc in [*self.bridges(), *self.app_servers()]:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        end(self.seen_bridges, 0.0)
        self.api.close()


def _status(pid: int) -> str | None:
    """A process's status, None once it is gone."""
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return None


def requests_carrying(api: StandInApi, text: str) -> list[dict[str, Any]]:
    """Every recorded model request whose JSON contains ``text``."""
    return [request for request in api.requests if text in json.dumps(request)]
