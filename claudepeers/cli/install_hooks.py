"""``install --hooks`` / ``uninstall --hooks``: the prompt hooks in Claude Code's and Codex's settings.

Claude Code reads hooks from ``~/.claude/settings.json``; Codex from ``~/.codex/hooks.json``
(next to its ``config.toml``; a separate file keeps the user's TOML untouched). Each step
records in the install manifest which file it edited and whether it created it, so that
uninstall removes exactly our entries and deletes only files install created.
Codex runs a new or changed command hook only after the user trusted it in ``/hooks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from claudepeers.common.jsonconfig import ConfigError
from claudepeers.cli.configfiles import edit_file, read_text, short_path
from claudepeers.hooks import config

CODEX_TRUST_LINE = "  Codex runs new hooks only once trusted: open /hooks in Codex and trust the claude-peers hooks"


def codex_hooks_path(installer: Any) -> Path:
    """Codex's user-level hooks file, next to its config.toml."""
    return installer.paths.codex_config.parent / "hooks.json"


def add_hooks(installer: Any, stop_guard: bool) -> None:
    """Install step: our hook entries in both agents' settings (idempotent)."""
    events = config.events_for(stop_guard)
    targets = [
        ("hooks-claude", "Claude Code", installer.paths.claude_settings, True),
        ("hooks-codex", "Codex", codex_hooks_path(installer), False),
    ]
    for key, label, path, rewake in targets:
        created = bool(installer.manifest.get(key, {}).get("created")) or not path.exists()
        where = short_path(installer.paths, path)
        try:
            edit_file(path, lambda text: config.hooks_add(text, installer.command, events, where, rewake))
        except ConfigError as exc:
            installer.fail(str(exc))
            continue
        installer.manifest[key] = {"path": str(path), "created": created, "events": events}
        installer.say(f"{label}: hooks {', '.join(events)} in {where}")
        if rewake:
            installer.say(f"  rewake hook ({', '.join(config.REWAKE_EVENTS)}, asyncRewake): "
                          "peer mail wakes an idle session that has no channel")
    if not stop_guard:
        installer.say("  stop guard off (install --hooks --stop-guard makes unread mail hold the turn's end)")
    installer.say(CODEX_TRUST_LINE)


def remove_hooks(remover: Any) -> None:
    """Uninstall step: remove our hook entries; delete files install created and left empty."""
    defaults = {
        "hooks-claude": ("Claude Code", remover.paths.claude_settings),
        "hooks-codex": ("Codex", remover.paths.codex_config.parent / "hooks.json"),
    }
    for key, (label, default_path) in defaults.items():
        recorded = remover.manifest.get(key, {})
        path = Path(recorded.get("path") or default_path)
        where = short_path(remover.paths, path)
        try:
            if edit_file(path, lambda text: config.hooks_remove(text, where)):
                remover.done(f"{label}: removed the claude-peers hooks from {where}")
        except ConfigError as exc:
            remover.fail(str(exc))
            continue
        if recorded.get("created"):
            text = read_text(path)
            if text is not None and text.strip() == "{}":
                path.unlink()
        remover.manifest.pop(key, None)
