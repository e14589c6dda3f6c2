"""The install steps, one object per file install touches, each of which it also undoes.

A step puts one thing of ours in one place (our MCP server in Claude Code's config or
Codex's, our tools on Claude Code's allow-list, the skill file, the service file; the
hooks have their own module, :mod:`.install_hooks`) and records in the manifest, under its
``key``, what uninstall needs to take out exactly that again. Every step has:

- ``install(ledger)``: add our part (idempotent), record it, report one line;
- ``uninstall(ledger)``: remove our part, drop its record, report what it removed;
- ``describe(ledger)``: what it puts where (a :class:`Description`), for both reports.

The :class:`~.configfiles.Ledger` of the run holds the manifest and the reports. A file
that cannot be parsed is left untouched and reported (``Ledger.fail``); the other steps
still run, and the command's exit status says something failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from claudepeers.cli import agent_config
from claudepeers.cli.agent_config import SERVER_NAME
from claudepeers.cli.configfiles import (
    Description, Ledger, claude_cli, read_text, run_claude, shipped_skill, short_path, write_text,
)
from claudepeers.common.platforms import services


class ClaudeServer:
    """Our MCP server in Claude Code's user config: by ``claude mcp add``, or in ~/.claude.json."""

    key = "claude"

    def describe(self, ledger: Ledger) -> Description:
        """``mcpServers.claude-peers`` in ~/.claude.json."""
        return Description("Claude Code", f"mcpServers.{SERVER_NAME}", short_path(ledger.paths, ledger.paths.claude_json))

    def install(self, ledger: Ledger) -> None:
        """Register the bridge with Claude Code's CLI when it is on PATH, else in the file."""
        claude = claude_cli() if ledger.use_claude_cli else None
        if claude:
            run_claude([claude, "mcp", "remove", "--scope", "user", SERVER_NAME])
            done = run_claude([claude, "mcp", "add", "--scope", "user", SERVER_NAME, "--", *ledger.command, "mcp"])
            if done.returncode != 0:
                ledger.fail(f"`claude mcp add` failed: {(done.stderr or done.stdout).strip()}")
                return
            ledger.manifest[self.key] = {"method": "claude-cli", "claude": claude}
            ledger.report(f"Claude Code: registered {SERVER_NAME} with `claude mcp add --scope user`")
            return
        add = lambda text, where: agent_config.claude_json_add(text, ledger.command, where)  # noqa: E731
        if ledger.add_entry(self.key, ledger.paths.claude_json, add, method="file"):
            ledger.report(self.describe(ledger).installed())

    def uninstall(self, ledger: Ledger) -> None:
        """Remove the server the way install added it."""
        recorded = ledger.manifest.get(self.key, {})
        claude = claude_cli() if ledger.use_claude_cli else None
        if claude and recorded.get("method") != "file":
            done = run_claude([claude, "mcp", "remove", "--scope", "user", SERVER_NAME])
            if done.returncode == 0:
                ledger.report(f"Claude Code: removed {SERVER_NAME} with `claude mcp remove --scope user`")
            ledger.manifest.pop(self.key, None)
            return
        ledger.remove_entry(self.key, ledger.paths.claude_json, agent_config.claude_json_remove,
                            self.describe(ledger).removed(), "{}")


class CodexServer:
    """Our MCP server as ``[mcp_servers.claude-peers]`` in Codex's config.toml; ``tcp_env``
    (CLAUDE_PEERS_URL...) makes it reach the broker over TCP."""

    key = "codex"

    def __init__(self, tcp_env: dict[str, str] | None = None) -> None:
        """The step; ``tcp_env`` only matters to install."""
        self.tcp_env = tcp_env

    def describe(self, ledger: Ledger) -> Description:
        """``[mcp_servers.claude-peers]`` in ~/.codex/config.toml (or where install wrote it)."""
        path = Path(ledger.manifest.get(self.key, {}).get("path") or ledger.paths.codex_config)
        return Description("Codex", f"[mcp_servers.{SERVER_NAME}]", short_path(ledger.paths, path))

    def install(self, ledger: Ledger) -> None:
        """Write our table (replacing an older one of ours), the rest of the file kept."""
        add = lambda text, where: agent_config.codex_toml_add(text, ledger.command, where, self.tcp_env)  # noqa: E731
        if not ledger.add_entry(self.key, ledger.paths.codex_config, add):
            return
        ledger.report(self.describe(ledger).installed())
        if self.tcp_env:
            ledger.report(f"  over TCP: {self.tcp_env['CLAUDE_PEERS_URL']} (a sandbox that blocks the UNIX socket "
                          "lets it through)")
            ledger.report("  run the broker with TCP on: CLAUDE_PEERS_TCP=1 claude-peers broker"
                          " (or CLAUDE_PEERS_TCP=1 in the service's environment)")

    def uninstall(self, ledger: Ledger) -> None:
        """Remove our table from the file install wrote it to."""
        path = Path(ledger.manifest.get(self.key, {}).get("path") or ledger.paths.codex_config)
        ledger.remove_entry(self.key, path, agent_config.codex_toml_remove, self.describe(ledger).removed(), "")


class AllowList:
    """Our tools on Claude Code's permission allow-list (~/.claude/settings.json), kill_peer not."""

    key = "allow"

    def describe(self, ledger: Ledger) -> Description:
        """The allow rules (those install added) in ~/.claude/settings.json (or where it wrote them)."""
        recorded = ledger.manifest.get(self.key) or {}
        count = len(recorded["rules"]) if "rules" in recorded else len(agent_config.allow_rules())
        path = Path(recorded.get("path") or ledger.paths.claude_settings)
        return Description("Claude Code", f"{count} allow rules", short_path(ledger.paths, path))

    def install(self, ledger: Ledger) -> None:
        """Add the missing rules; record only those this tool added (the user's stay theirs)."""
        path = ledger.paths.claude_settings
        rules = agent_config.allow_rules()
        recorded = ledger.manifest.get(self.key, {}).get("rules", [])  # before add_entry records anew
        added: list[str] = []

        def change(text: str | None, where: str) -> str:
            new_text, newly = agent_config.settings_allow_add(text, rules, where)
            added.extend(newly)
            return new_text

        if not ledger.add_entry(self.key, path, change):
            return
        ledger.manifest[self.key]["rules"] = sorted(set(recorded) | set(added))
        ledger.report(f"Claude Code: {len(rules)} tools allowed in {short_path(ledger.paths, path)} (kill_peer still asks)")

    def uninstall(self, ledger: Ledger) -> None:
        """Remove the rules install added."""
        recorded = ledger.manifest.get(self.key)
        if not recorded:
            return
        rules = list(recorded.get("rules", []))
        ledger.remove_entry(self.key, Path(recorded["path"]),
                            lambda text, where: agent_config.settings_allow_remove(text, rules, where),
                            self.describe(ledger).removed(), "{}")


class _OwnFile:
    """A whole file of ours (the skill, the service file): written with its digest recorded,
    removed only while it still has that digest (an edited file stays)."""

    key = ""

    def _label(self, ledger: Ledger) -> str:
        raise NotImplementedError

    def _path(self, ledger: Ledger) -> Path | None:
        """Where the file is: as recorded, else where install would write it (None: not known)."""
        recorded = ledger.manifest.get(self.key, {}).get("path")
        return Path(recorded) if recorded else None

    def describe(self, ledger: Ledger) -> Description:
        """The file itself."""
        path = self._path(ledger)
        return Description(self._label(ledger), short_path(ledger.paths, path) if path else "its file", "")

    def _write(self, ledger: Ledger, path: Path, text: str, **record: Any) -> None:
        write_text(path, text, new_mode=0o644)
        ledger.manifest[self.key] = {"path": str(path), "sha256": _sha(text), **record}

    def uninstall(self, ledger: Ledger) -> None:
        """Delete the file (and its folder, once empty) unless it was changed since install."""
        recorded = ledger.manifest.get(self.key)
        if not recorded:
            return
        path = Path(recorded["path"])
        text = read_text(path)
        if text is not None:
            if _sha(text) != recorded.get("sha256"):
                ledger.fail(f"{short_path(ledger.paths, path)} was changed since install; left in place")
                return
            path.unlink()
            ledger.report(self.describe(ledger).removed())
            try:
                path.parent.rmdir()  # only when empty
            except OSError:
                pass
        ledger.manifest.pop(self.key, None)


class Skill(_OwnFile):
    """Our skill as ~/.claude/skills/claude-peers/SKILL.md."""

    key = "skill"

    def _label(self, ledger: Ledger) -> str:
        return "Skill"

    def _path(self, ledger: Ledger) -> Path | None:
        return super()._path(ledger) or ledger.paths.skill

    def install(self, ledger: Ledger) -> None:
        """Write the shipped skill, unless a file we did not write is there."""
        path = ledger.paths.skill
        text = shipped_skill()
        before = read_text(path)
        if before is not None and before != text and _sha(before) != ledger.manifest.get(self.key, {}).get("sha256"):
            ledger.fail(f"{short_path(ledger.paths, path)} exists and was not written by claude-peers; left untouched")
            return
        self._write(ledger, path, text)
        ledger.report(self.describe(ledger).installed())


class Service(_OwnFile):
    """The broker's systemd user unit or launchd agent, with real paths."""

    key = "service"

    def __init__(self, kind: str | None = None, settings: Any = None) -> None:
        """The step; ``kind`` (systemd, launchd) and ``settings`` only matter to install."""
        self.kind = kind
        self.settings = settings

    def _label(self, ledger: Ledger) -> str:
        return f"Service ({self.kind or ledger.manifest.get(self.key, {}).get('kind', 'systemd')})"

    def install(self, ledger: Ledger) -> None:
        """Write the service file and say how to load it."""
        settings = self.settings
        database: Any = settings.db_path
        if getattr(settings, "db_dsn", None) is not None:
            from claudepeers.common import dsn as dsns

            # The service file is readable by others: never a password in it (libpq reads ~/.pgpass).
            database = dsns.without_password(settings.db_dsn)
            if database != settings.db_dsn:
                ledger.report("  CLAUDE_PEERS_DB carries a password: it is left out of the service file; "
                              "put it in ~/.pgpass (mode 0600), where libpq finds it")
        rendered = services.render(self.kind, ledger.paths.home, ledger.command, settings.socket_path, database)
        self._write(ledger, rendered.path, rendered.text, kind=self.kind)
        if rendered.log is not None:
            rendered.log.parent.mkdir(parents=True, exist_ok=True)
        ledger.report(self.describe(ledger).installed())
        ledger.report(f"  load it:  {rendered.load}")
        ledger.report(f"  stop it:  claude-peers kill-broker   (unload: {rendered.unload})")

    def uninstall(self, ledger: Ledger) -> None:
        """Remove the service file; say how to unload the running service first."""
        recorded = ledger.manifest.get(self.key)
        super().uninstall(ledger)
        if recorded and self.key not in ledger.manifest:
            if recorded.get("kind") == "launchd":
                print("  if it is loaded: launchctl bootout gui/$(id -u)/com.claude-peers.broker")
            else:
                print("  if it is loaded: systemctl --user disable --now claude-peers.service")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
