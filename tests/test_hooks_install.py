"""``claude-peers install --hooks`` / ``uninstall`` in a temporary HOME: exactly our entries, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from claudepeers.cli.install import installed_command
from claudepeers.hooks import config
from cli_support import cli
from conftest import broker_env

USER_SETTINGS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(ls:*)"]},
    "hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "UserPromptSubmit": [{"matcher": "", "hooks": [{"type": "command", "command": "my-prompt-logger"}]}],
    },
}


def home_env(home: Path) -> dict[str, str]:
    """An environment whose HOME is ``home`` and whose PATH has no real ``claude``."""
    return broker_env(home, PATH=f"{home / 'bin'}:/usr/bin:/bin")


def ours(event: str) -> dict:
    """The handler group install writes for ``event``."""
    return {"hooks": [{"type": "command", "command": config.hook_command(installed_command(), event),
                       "timeout": config.HOOK_TIMEOUT}]}


def rewake() -> dict:
    """The rewake waiter's handler group (Claude Code only, on SessionStart, UserPromptSubmit and Stop)."""
    return {"hooks": [config.rewake_handler(installed_command())]}


def read_json(path: Path) -> dict:
    """A JSON file's content."""
    return json.loads(path.read_text())


def test_install_hooks_adds_exactly_our_entries_next_to_the_users(short_dir: Path) -> None:
    """Claude settings keep every user key and hook; ours are appended; Codex gets a hooks.json of ours only."""
    settings = short_dir / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(USER_SETTINGS, indent=2))
    done = cli(home_env(short_dir), "install", "--hooks")
    assert done.returncode == 0, done.stderr
    assert "open /hooks in Codex" in done.stdout
    expected_hooks = {
        "Stop": [*USER_SETTINGS["hooks"]["Stop"], rewake()],
        "UserPromptSubmit": [*USER_SETTINGS["hooks"]["UserPromptSubmit"], ours("UserPromptSubmit"), rewake()],
        "SessionStart": [ours("SessionStart"), rewake()],
    }
    assert read_json(settings) == {**USER_SETTINGS, "hooks": expected_hooks}
    assert read_json(short_dir / ".codex" / "hooks.json") == {
        "hooks": {"SessionStart": [ours("SessionStart")], "UserPromptSubmit": [ours("UserPromptSubmit")]}}
    assert not (short_dir / ".claude.json").exists() and not (short_dir / ".codex" / "config.toml").exists()


def test_install_hooks_is_idempotent_and_the_stop_guard_is_opt_in(short_dir: Path) -> None:
    """Installing twice changes no byte; --stop-guard adds Stop; installing without it removes our Stop again."""
    env = home_env(short_dir)
    settings = short_dir / ".claude" / "settings.json"
    codex = short_dir / ".codex" / "hooks.json"
    assert cli(env, "install", "--hooks").returncode == 0
    first = (settings.read_text(), codex.read_text())
    assert cli(env, "install", "--hooks").returncode == 0
    assert (settings.read_text(), codex.read_text()) == first
    assert read_json(settings)["hooks"]["Stop"] == [rewake()] and "Stop" not in read_json(codex)["hooks"]
    assert cli(env, "install", "--stop-guard").returncode == 0
    assert read_json(settings)["hooks"]["Stop"] == [ours("Stop"), rewake()]
    assert read_json(codex)["hooks"]["Stop"] == [ours("Stop")]
    for path in (settings, codex):
        assert config.installed_events(path.read_text(), str(path)) == ["SessionStart", "UserPromptSubmit", "Stop"]
    assert cli(env, "install", "--hooks").returncode == 0
    assert (settings.read_text(), codex.read_text()) == first


def test_uninstall_removes_exactly_our_hooks_and_the_files_install_created(short_dir: Path) -> None:
    """uninstall --hooks restores the user's settings and deletes the hooks.json install created."""
    env = home_env(short_dir)
    settings = short_dir / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(USER_SETTINGS, indent=2))
    assert cli(env, "install", "--hooks", "--stop-guard").returncode == 0
    done = cli(env, "uninstall", "--hooks")
    assert done.returncode == 0, done.stderr
    assert read_json(settings) == USER_SETTINGS
    assert not (short_dir / ".codex" / "hooks.json").exists()
    manifest = short_dir / ".config" / "claude-peers" / "install.json"
    assert not manifest.exists() or not {"hooks-claude", "hooks-codex"} & set(read_json(manifest))
    assert "Nothing to uninstall." in cli(env, "uninstall", "--hooks").stdout


def test_plain_uninstall_removes_the_hooks_too_and_deletes_created_files(short_dir: Path) -> None:
    """uninstall without flags removes everything install added, hooks included; files it created go."""
    env = home_env(short_dir)
    assert cli(env, "install", "--hooks").returncode == 0
    assert cli(env, "uninstall").returncode == 0
    assert not (short_dir / ".claude" / "settings.json").exists()
    assert not (short_dir / ".codex" / "hooks.json").exists()


def test_a_malformed_settings_file_is_left_untouched(short_dir: Path) -> None:
    """A settings.json that is not JSON stays byte for byte; Codex still gets its hooks; exit 1."""
    settings = short_dir / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"hooks": ')
    done = cli(home_env(short_dir), "install", "--hooks")
    assert done.returncode == 1 and "not valid JSON" in done.stderr
    assert settings.read_text() == '{"hooks": '
    assert "UserPromptSubmit" in read_json(short_dir / ".codex" / "hooks.json")["hooks"]


def test_only_hook_commands_of_claude_peers_count_as_ours() -> None:
    """The hook command of the script or of ``python -m claudepeers`` is ours; look-alikes are not."""
    assert config.is_ours({"type": "command", "command": "/opt/bin/claude-peers hook Stop"})
    assert config.is_ours({"type": "command", "command": "/usr/bin/python3 -m claudepeers hook SessionStart"})
    assert config.is_ours({"type": "command", "command": "/opt/bin/claude-peers hook wait", "asyncRewake": True})
    assert not config.is_ours({"type": "command", "command": "/opt/bin/claude-peers hook PreToolUse"})
    assert not config.is_ours({"type": "command", "command": "my-claude-peers-wrapper hook Stop"})
    assert not config.is_ours({"type": "prompt", "command": "claude-peers hook Stop"})
    assert not config.is_ours({"type": "command", "command": "echo 'unbalanced"})
