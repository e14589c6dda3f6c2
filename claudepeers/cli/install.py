"""``claude-peers install`` and ``uninstall``: agent configs, allow-list, skill, service.

Every change is recorded in a manifest (``~/.config/claude-peers/install.json``) so that
``uninstall`` removes exactly what ``install`` added: the ``claude-peers`` server entries
(ours by name), the allow-list rules this tool added (not those the user had), the skill
file and the service file it wrote. A config that cannot be parsed is left untouched and
reported; the other steps still run, and the exit status says something failed.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from claudepeers.cli.agent_config import SERVER_NAME
from claudepeers.cli.claims_guard import step as claims_guard_step
from claudepeers.cli.configfiles import (  # noqa: F401 - installed_command, shipped_skill: also imported from here
    Ledger, Paths, Step, home_dir, installed_command, load_manifest, save_manifest, shipped_skill,
)
from claudepeers.cli.install_hooks import HookFile
from claudepeers.cli.install_steps import AllowList, ClaudeServer, CodexServer, Service, Skill
from claudepeers.cli.main import EXIT_FAILED, EXIT_USAGE, error

CHANNELS_LAUNCH_LINE = f"claude --dangerously-load-development-channels server:{SERVER_NAME}"


def tcp_settings(settings: Any) -> dict[str, str]:
    """The bridge's environment for reaching this broker over TCP: the URL, and the token
    file when it is not where the bridge would look by default."""
    from claudepeers.common.settings import Settings

    env = {"CLAUDE_PEERS_URL": f"tcp://127.0.0.1:{settings.tcp_port}"}
    default = Settings.from_env({"HOME": str(home_dir())}).token_path
    if settings.token_path != default:
        env["CLAUDE_PEERS_TOKEN_FILE"] = str(settings.token_path)
    return env


def default_service_kind() -> str:
    """launchd on macOS, systemd elsewhere."""
    from claudepeers.common import platforms

    return platforms.SERVICE_KIND


_TARGET_FLAGS = ["claude", "codex", "service", "allow-tools", "skill", "hooks"]


class InstallOptions(usage.Options):
    """``claude-peers install [--claude] [--codex] [--service] [--allow-tools] [--skill]``."""

    synopsis = "Usage: claude-peers install [--claude] [--codex] [--service] [--allow-tools] [--skill] [--hooks [--stop-guard]]"
    longdesc = "With no target flag: --claude --codex. Idempotent: running it again changes nothing."
    optFlags = [
        ("claude", None, "Register the bridge with Claude Code (user scope)"),
        ("codex", None, "Register the bridge with Codex (~/.codex/config.toml)"),
        ("service", None, "Write the broker's systemd user unit or launchd agent"),
        ("allow-tools", None, "Allow the peer tools in ~/.claude/settings.json (not kill_peer)"),
        ("skill", None, "Install the claude-peers skill into ~/.claude/skills/"),
        ("hooks", None, "Add prompt hooks that show peer mail (Claude Code settings, Codex hooks.json)"),
        ("stop-guard", None, "With --hooks: unread peer mail holds the end of a turn (Stop hook)"),
        ("config-file", None, "Edit ~/.claude.json directly even when `claude` is on PATH"),
        ("tcp", None, "With --codex: Codex reaches the broker over TCP (for its macOS seatbelt sandbox)"),
        ("claims-guard", None, "A git pre-commit hook in this repository refusing others' claimed paths"),
    ]
    optParameters = [
        ("command", None, None, "The claude-peers command to register (default: this one)"),
        ("service-kind", None, None, "systemd or launchd (default: this system's)"),
    ]

    def postOptions(self) -> None:
        """No target flag means Claude Code and Codex; check the service kind."""
        if self["stop-guard"]:
            self["hooks"] = True
        if not any(self[flag] for flag in _TARGET_FLAGS) and not self["claims-guard"]:
            self["claude"] = self["codex"] = True
        if self["service-kind"] not in (None, "systemd", "launchd"):
            raise usage.UsageError("--service-kind must be systemd or launchd")
        if self["tcp"] and not self["codex"]:
            raise usage.UsageError("--tcp goes with --codex")
        if self["command"] and not os.path.isabs(self["command"]):
            raise usage.UsageError("--command must be an absolute path")

    def steps(self, settings: Any) -> list[Step]:
        """The chosen steps, in the order they run (the service last: it names the others' command)."""
        chosen = {
            "claude": lambda: [ClaudeServer()],
            "codex": lambda: [CodexServer(tcp_settings(settings) if self["tcp"] else None)],
            "allow-tools": lambda: [AllowList()],
            "skill": lambda: [Skill()],
            "hooks": lambda: [HookFile.claude(self["stop-guard"]), HookFile.codex(self["stop-guard"])],
            "service": lambda: [Service(self["service-kind"] or default_service_kind(), settings)],
        }
        return [step for flag, make in chosen.items() if self[flag] for step in make()]

    def run(self) -> int:
        """Run the chosen steps, record them, print the channels launch line."""
        from claudepeers.common.settings import SettingError, Settings

        if self["claims-guard"] and claims_guard_step("install", _targets(self)):
            return 0
        try:
            settings = Settings.from_env()
        except SettingError as exc:
            return error(str(exc), EXIT_USAGE)
        paths = Paths(home_dir())
        ledger = Ledger(paths, load_manifest(paths), installed_command(self["command"]), not self["config-file"])
        try:
            for step in self.steps(settings):
                step.install(ledger)
        finally:
            ledger.note_created()
            save_manifest(paths, ledger.manifest)
        if self["claude"] and not ledger.failed:
            print(f"Start Claude Code with channel push:  {CHANNELS_LAUNCH_LINE}")
        return EXIT_FAILED if ledger.failed else 0


class UninstallOptions(usage.Options):
    """``claude-peers uninstall [--claude] [--codex] [--service] [--allow-tools] [--skill]``."""

    synopsis = "Usage: claude-peers uninstall [--claude] [--codex] [--service] [--allow-tools] [--skill] [--hooks]"
    longdesc = "With no target flag: everything install added."
    optFlags = [(flag, None, f"Remove what install --{flag} added") for flag in _TARGET_FLAGS]
    optFlags += [("config-file", None, "Edit ~/.claude.json directly even when `claude` is on PATH"), ("claims-guard", None, "Remove this repository's claims guard")]

    def postOptions(self) -> None:
        """No target flag means all of them."""
        if not any(self[flag] for flag in _TARGET_FLAGS) and not self["claims-guard"]:
            for flag in _TARGET_FLAGS:
                self[flag] = True

    def run(self) -> int:
        """Remove what the manifest records (and our server entries, which are ours by name)."""
        if self["claims-guard"] and claims_guard_step("uninstall", _targets(self)):
            return 0
        paths = Paths(home_dir())
        ledger = Ledger(paths, load_manifest(paths), use_claude_cli=not self["config-file"])
        for step in uninstall_steps(_targets(self)):
            step.uninstall(ledger)
        ledger.delete_emptied_files()
        save_manifest(paths, ledger.manifest)
        if not ledger.changed and not ledger.failed:
            print("Nothing to uninstall.")
        return EXIT_FAILED if ledger.failed else 0


def _targets(options: usage.Options) -> list[str]:
    """The target flags given (claims-guard, per repository, is not one of them)."""
    return [flag for flag in _TARGET_FLAGS if options[flag]]


def uninstall_steps(flags: list[str]) -> list[Step]:
    """The steps that undo what ``install --<flag>`` did, for each of ``flags``."""
    steps: dict[str, list[Step]] = {
        "claude": [ClaudeServer()], "codex": [CodexServer()], "service": [Service()], "allow-tools": [AllowList()],
        "skill": [Skill()], "hooks": [HookFile.claude(), HookFile.codex()],
    }
    return [step for flag in flags for step in steps[flag]]
