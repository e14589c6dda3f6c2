"""The ground the install and uninstall steps share: where the files are, reading and
editing them atomically, the manifest of what install did, the run's :class:`Ledger` and
what a :class:`Step` is, and the ``claude`` CLI.

The steps (``install_steps.py``, ``install_hooks.py``) build on this module, and the
commands (``install.py``) on the steps; nothing here knows a step (no import circle).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from claudepeers.cli.agent_config import SERVER_NAME
from claudepeers.cli.main import error
from claudepeers.common.jsonconfig import ConfigError


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


@dataclass(frozen=True)
class Description:
    """What a step puts where: ``Codex: [mcp_servers.claude-peers] in ~/.codex/config.toml``."""

    label: str
    what: str
    where: str

    def installed(self) -> str:
        """The line install prints."""
        return f"{self.label}: {self.what} in {self.where}" if self.where else f"{self.label}: {self.what}"

    def removed(self) -> str:
        """The line uninstall prints."""
        return f"{self.label}: removed {self.what} from {self.where}" if self.where else f"{self.label}: removed {self.what}"


class Ledger:
    """One install or uninstall run: the paths, the manifest, the command, the reports."""

    def __init__(self, paths: Paths, manifest: dict, command: list[str] | None = None,
                 use_claude_cli: bool = True) -> None:
        """A run under ``paths`` that starts from ``manifest`` and registers ``command mcp``."""
        self.paths = paths
        self.manifest = dict(manifest)
        self.command = command or []
        self.use_claude_cli = use_claude_cli
        self.changed = False
        self.failed = False
        #: Config files that did not exist before this run (see note_created).
        self._absent = [path for path in paths.shared_configs() if not path.exists()]

    def report(self, text: str) -> None:
        """One line of what was done, on stdout."""
        self.changed = True
        print(text)

    def fail(self, text: str) -> None:
        """One line on stderr of what could not be done; the command will exit non-zero."""
        error(text)
        self.failed = True

    def created(self, key: str, path: Path) -> bool:
        """Whether install created ``path`` (now, or in an earlier run recorded as ``key``)."""
        return bool(self.manifest.get(key, {}).get("created")) or not path.exists()

    def add_entry(self, key: str, path: Path, add: Callable[[str | None, str], str | None], **record: Any) -> bool:
        """Put our entry into ``path`` (``add(text, shown_path)``) and record it as ``key``
        with ``record``; False (the failure said) when the file cannot take it."""
        created = self.created(key, path)  # before the edit creates the file
        where = short_path(self.paths, path)
        try:
            edit_file(path, lambda text: add(text, where))
        except ConfigError as exc:
            self.fail(str(exc))
            return False
        self.manifest[key] = {**record, "path": str(path), "created": created}
        return True

    def remove_entry(self, key: str, path: Path, remove: Callable[[str | None, str], str | None],
                     removed: str, empty: str) -> None:
        """Take our entry out of ``path`` (reporting ``removed`` if it was there), delete the
        file if install created it and it is back to ``empty``, and forget ``key``."""
        where = short_path(self.paths, path)
        try:
            if edit_file(path, lambda text: remove(text, where)):
                self.report(removed)
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self.drop_if_created(key, path, empty)
        self.manifest.pop(key, None)

    def drop_if_created(self, key: str, path: Path, empty: str) -> None:
        """Delete ``path`` when install created it (as ``key`` records) and it is back to ``empty``."""
        if not self.manifest.get(key, {}).get("created"):
            return
        text = read_text(path)
        if text is not None and text.strip() == empty:
            path.unlink()

    def note_created(self) -> None:
        """Record which shared config files this run created, whichever step did it:
        uninstall deletes them once every step that edited them has left them empty."""
        created = set(self.manifest.get("created_files", []))
        created |= {str(path) for path in self._absent if path.exists()}
        if created:
            self.manifest["created_files"] = sorted(created)

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


class Step(Protocol):
    """One file's part of install and uninstall."""

    key: str

    def describe(self, ledger: Ledger) -> Description:
        """What this step puts where."""

    def install(self, ledger: Ledger) -> None:
        """Add our part and record it."""

    def uninstall(self, ledger: Ledger) -> None:
        """Remove our part and its record."""
