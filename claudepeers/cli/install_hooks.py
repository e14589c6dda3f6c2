"""``install --hooks`` / ``uninstall --hooks``: the prompt hooks, one step per agent's file.

Claude Code reads hooks from ``~/.claude/settings.json``; Codex from ``~/.codex/hooks.json``
(next to its ``config.toml``; a separate file keeps the user's TOML untouched). Each step
records in the install manifest which file it edited and whether it created it, so that
uninstall removes exactly our entries and deletes only files install created.
Codex runs a new or changed command hook only after the user trusted it in ``/hooks``.
"""

from __future__ import annotations

from pathlib import Path

from claudepeers.cli.configfiles import Description, Ledger, Paths, short_path
from claudepeers.hooks import config

CODEX_TRUST_LINE = "  Codex runs new hooks only once trusted: open /hooks in Codex and trust the claude-peers hooks"


def codex_hooks_path(paths: Paths) -> Path:
    """Codex's user-level hooks file, next to its config.toml."""
    return paths.codex_config.parent / "hooks.json"


class HookFile:
    """Our hook entries in one agent's hooks file (the user's entries stay as they are)."""

    def __init__(self, key: str, label: str, rewake: bool, stop_guard: bool = False) -> None:
        """The step for one agent; ``rewake``: add the rewake waiter (Claude Code's asyncRewake)."""
        self.key = key
        self.label = label
        self.rewake = rewake
        self.stop_guard = stop_guard

    @classmethod
    def claude(cls, stop_guard: bool = False) -> "HookFile":
        """Claude Code's ~/.claude/settings.json, with the rewake hook."""
        return cls("hooks-claude", "Claude Code", rewake=True, stop_guard=stop_guard)

    @classmethod
    def codex(cls, stop_guard: bool = False) -> "HookFile":
        """Codex's ~/.codex/hooks.json."""
        return cls("hooks-codex", "Codex", rewake=False, stop_guard=stop_guard)

    def _path(self, ledger: Ledger) -> Path:
        recorded = ledger.manifest.get(self.key, {}).get("path")
        if recorded:
            return Path(recorded)
        return ledger.paths.claude_settings if self.rewake else codex_hooks_path(ledger.paths)

    def describe(self, ledger: Ledger) -> Description:
        """The claude-peers hooks in this agent's file."""
        return Description(self.label, "the claude-peers hooks", short_path(ledger.paths, self._path(ledger)))

    def install(self, ledger: Ledger) -> None:
        """Add our hook entries (idempotent) and say what they do."""
        path = self._path(ledger)
        events = config.events_for(self.stop_guard)
        add = lambda text, where: config.hooks_add(text, ledger.command, events, where, self.rewake)  # noqa: E731
        if not ledger.add_entry(self.key, path, add, events=events):
            return
        ledger.report(f"{self.label}: hooks {', '.join(events)} in {short_path(ledger.paths, path)}")
        if self.rewake:
            ledger.report(f"  rewake hook ({', '.join(config.REWAKE_EVENTS)}, asyncRewake): "
                          "peer mail wakes an idle session that has no channel")
            if not self.stop_guard:
                ledger.report("  stop guard off (install --hooks --stop-guard makes unread mail hold the turn's end)")
        else:
            ledger.report(CODEX_TRUST_LINE)

    def uninstall(self, ledger: Ledger) -> None:
        """Remove our hook entries; delete the file if install created it and left it empty."""
        ledger.remove_entry(self.key, self._path(ledger), config.hooks_remove, self.describe(ledger).removed(), "{}")
