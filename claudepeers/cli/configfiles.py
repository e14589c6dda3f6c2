"""The ground the install and uninstall steps share: where the files are, reading and
editing them atomically, the manifest of what install did, and the ``claude`` CLI.

``install.py``, ``install_hooks.py`` and ``uninstall.py`` all build on this module and on
nothing of each other's but their own steps (no import circle).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable

from claudepeers.cli.agent_config import SERVER_NAME


def home_dir() -> Path:
    """The user's home: ``$HOME`` (tests point it at a temporary directory)."""
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


class Paths:
    """Where every file install touches lives, under one home directory."""

    def __init__(self, home: Path) -> None:
        """All paths below ``home``."""
        self.home = home
        self.claude_json = home / ".claude.json"
        self.claude_settings = home / ".claude" / "settings.json"
        self.skill = home / ".claude" / "skills" / SERVER_NAME / "SKILL.md"
        self.codex_config = Path(os.environ.get("CODEX_HOME") or home / ".codex") / "config.toml"
        self.manifest = home / ".config" / "claude-peers" / "install.json"

    def shared_configs(self) -> list[Path]:
        """Config files several install steps may edit: created by one, emptied by several."""
        return [self.claude_json, self.claude_settings, self.codex_config, self.codex_config.parent / "hooks.json"]


def installed_command(explicit: str | None = None) -> list[str]:
    """The absolute command that runs ``claude-peers`` (to write into agent configs)."""
    if explicit:
        return [os.path.abspath(explicit)]
    beside = Path(sys.executable).parent / "claude-peers"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    found = shutil.which("claude-peers")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "claudepeers"]


def shipped_skill() -> str:
    """The text of the skill shipped in the package (``claudepeers/skill/SKILL.md``)."""
    return resources.files("claudepeers").joinpath("skill", "SKILL.md").read_text()


def read_text(path: Path) -> str | None:
    """A file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_text(path: Path, text: str, new_mode: int = 0o600) -> None:
    """Replace ``path`` atomically, keeping its mode (``new_mode`` for a new file).

    A symlink (a dotfiles repository's ``~/.claude.json``) stays a symlink: the file it
    points to is replaced, atomically, in its own directory.
    """
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_mode
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def load_manifest(paths: Paths) -> dict:
    """What earlier installs recorded (empty when nothing or unreadable)."""
    try:
        data = json.loads(paths.manifest.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_manifest(paths: Paths, manifest: dict) -> None:
    """Record what is installed; the manifest file goes away when nothing is."""
    if manifest:
        write_text(paths.manifest, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    elif paths.manifest.exists():
        paths.manifest.unlink()


def short_path(paths: Paths, path: Path) -> str:
    """``path`` shown relative to the home directory as ``~/...`` when it lies below it."""
    try:
        return "~/" + str(path.relative_to(paths.home))
    except ValueError:
        return str(path)


def edit_file(path: Path, change: Callable[[str | None], str | None]) -> bool:
    """Apply ``change`` to the file's text; write when it returns new text. True if written."""
    before = read_text(path)
    after = change(before)
    if after is None or after == before:
        return False
    write_text(path, after)
    return True


def claude_cli() -> str | None:
    """The ``claude`` command on PATH, if any."""
    return shutil.which("claude")


def run_claude(args: list[str]) -> subprocess.CompletedProcess:
    """Run the ``claude`` CLI (``mcp add``/``mcp remove``), capturing its output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
