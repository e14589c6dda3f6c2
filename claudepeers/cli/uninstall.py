"""Removing what ``claude-peers install`` added, step by step (see :mod:`.install`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from claudepeers.cli import agent_config
from claudepeers.cli.agent_config import SERVER_NAME, ConfigError
from claudepeers.cli.configfiles import Paths, claude_cli, edit_file, read_text, run_claude, short_path
from claudepeers.cli.main import error


class Uninstaller:
    """The uninstall steps; each removes its part and drops it from the manifest."""

    def __init__(self, paths: Paths, manifest: dict, use_claude_cli: bool = True) -> None:
        """Undo the installs recorded in ``manifest`` under ``paths``."""
        self.paths = paths
        self.manifest = dict(manifest)
        self.use_claude_cli = use_claude_cli
        self.changed = False
        self.failed = False

    def _drop_if_created(self, key: str, path: Path, empty: str) -> None:
        """Delete ``path`` when install created it and it is back to ``empty``."""
        if not self.manifest.get(key, {}).get("created"):
            return
        text = read_text(path)
        if text is not None and text.strip() == empty:
            path.unlink()

    def delete_emptied_files(self) -> None:
        """Delete the config files install created that no entry of ours is left in."""
        remaining = []
        for name in self.manifest.get("created_files", []):
            path = Path(name)
            text = read_text(path)
            if text is None:
                continue
            if text.strip() in ("", "{}"):
                path.unlink()
                continue
            remaining.append(name)
        if remaining:
            self.manifest["created_files"] = remaining
        else:
            self.manifest.pop("created_files", None)

    def done(self, text: str) -> None:
        """Report one thing removed."""
        self.changed = True
        print(text)

    def fail(self, text: str) -> None:
        """Report one thing that could not be removed (uninstall then exits non-zero)."""
        error(text)
        self.failed = True

    def claude(self) -> None:
        """Remove the ``claude-peers`` MCP server from Claude Code's user config."""
        recorded = self.manifest.get("claude", {})
        claude = claude_cli() if self.use_claude_cli else None
        if claude and recorded.get("method") != "file":
            done = run_claude([claude, "mcp", "remove", "--scope", "user", SERVER_NAME])
            if done.returncode == 0:
                self.done(f"Claude Code: removed {SERVER_NAME} with `claude mcp remove --scope user`")
            self.manifest.pop("claude", None)
            return
        path = self.paths.claude_json
        try:
            if edit_file(path, lambda text: agent_config.claude_json_remove(text, short_path(self.paths, path))):
                self.done(f"Claude Code: removed mcpServers.{SERVER_NAME} from {short_path(self.paths, path)}")
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self._drop_if_created("claude", path, "{}")
        self.manifest.pop("claude", None)

    def codex(self) -> None:
        """Remove ``[mcp_servers.claude-peers]`` from the Codex config."""
        path = Path(self.manifest.get("codex", {}).get("path") or self.paths.codex_config)
        try:
            if edit_file(path, lambda text: agent_config.codex_toml_remove(text, short_path(self.paths, path))):
                self.done(f"Codex: removed [mcp_servers.{SERVER_NAME}] from {short_path(self.paths, path)}")
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self._drop_if_created("codex", path, "")
        self.manifest.pop("codex", None)

    def allow_tools(self) -> None:
        """Remove the allow-list rules install added (rules the user had stay)."""
        recorded = self.manifest.get("allow")
        if not recorded:
            return
        path = Path(recorded["path"])
        rules = list(recorded.get("rules", []))
        try:
            if edit_file(path, lambda text: agent_config.settings_allow_remove(text, rules, short_path(self.paths, path))):
                self.done(f"Claude Code: removed {len(rules)} allow rules from {short_path(self.paths, path)}")
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self._drop_if_created("allow", path, "{}")
        self.manifest.pop("allow", None)

    def _remove_file(self, key: str, label: str) -> None:
        recorded = self.manifest.get(key)
        if not recorded:
            return
        path = Path(recorded["path"])
        text = read_text(path)
        if text is not None:
            if hashlib.sha256(text.encode()).hexdigest() != recorded.get("sha256"):
                self.fail(f"{short_path(self.paths, path)} was changed since install; left in place")
                return
            path.unlink()
            self.done(f"{label}: removed {short_path(self.paths, path)}")
            try:
                path.parent.rmdir()  # only when empty
            except OSError:
                pass
        self.manifest.pop(key, None)

    def hooks(self) -> None:
        """Remove the prompt hooks from Claude Code's settings and Codex's hooks.json."""
        from claudepeers.cli.install_hooks import remove_hooks

        remove_hooks(self)

    def skill(self) -> None:
        """Remove the installed skill file (unless it was edited since)."""
        self._remove_file("skill", "Skill")

    def service(self) -> None:
        """Remove the service file; say how to unload the running service first."""
        recorded = self.manifest.get("service")
        self._remove_file("service", "Service")
        if recorded and "service" not in self.manifest:
            if recorded.get("kind") == "launchd":
                print("  if it is loaded: launchctl bootout gui/$(id -u)/com.claude-peers.broker")
            else:
                print("  if it is loaded: systemctl --user disable --now claude-peers.service")
