"""``claude-peers install`` and ``uninstall``: agent configs, allow-list, skill, service.

Every change is recorded in a manifest (``~/.config/claude-peers/install.json``) so that
``uninstall`` removes exactly what ``install`` added: the ``claude-peers`` server entries
(ours by name), the allow-list rules this tool added (not those the user had), the skill
file and the service file it wrote. A config that cannot be parsed is left untouched and
reported; the other steps still run, and the exit status says something failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from twisted.python import usage

from claudepeers.cli import agent_config, service
from claudepeers.cli.agent_config import SERVER_NAME, ConfigError
from claudepeers.cli.main import EXIT_FAILED, EXIT_USAGE, error

CHANNELS_LAUNCH_LINE = f"claude --dangerously-load-development-channels server:{SERVER_NAME}"


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


class Installer:
    """The install steps, each reporting one line and recording what it added."""

    def __init__(self, paths: Paths, command: list[str], use_claude_cli: bool = True) -> None:
        """Install into ``paths`` a bridge started as ``command mcp``."""
        self.paths = paths
        self.command = command
        self.use_claude_cli = use_claude_cli
        self.manifest = load_manifest(paths)
        self.failed = False

    def _created(self, key: str, path: Path) -> bool:
        """Whether install created ``path`` (now, or in an earlier run recorded as ``key``)."""
        return bool(self.manifest.get(key, {}).get("created")) or not path.exists()

    def say(self, text: str) -> None:
        """One line of progress on stdout."""
        print(text)

    def fail(self, text: str) -> None:
        """One line on stderr; the command will exit non-zero."""
        error(text)
        self.failed = True

    def claude(self) -> None:
        """Register the bridge with Claude Code (``claude mcp add`` or ``~/.claude.json``)."""
        claude = claude_cli() if self.use_claude_cli else None
        if claude:
            run_claude([claude, "mcp", "remove", "--scope", "user", SERVER_NAME])
            done = run_claude([claude, "mcp", "add", "--scope", "user", SERVER_NAME, "--", *self.command, "mcp"])
            if done.returncode != 0:
                self.fail(f"`claude mcp add` failed: {(done.stderr or done.stdout).strip()}")
                return
            self.manifest["claude"] = {"method": "claude-cli", "claude": claude}
            self.say(f"Claude Code: registered {SERVER_NAME} with `claude mcp add --scope user`")
            return
        path = self.paths.claude_json
        created = self._created("claude", path)
        try:
            edit_file(path, lambda text: agent_config.claude_json_add(text, self.command, short_path(self.paths, path)))
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self.manifest["claude"] = {"method": "file", "path": str(path), "created": created}
        self.say(f"Claude Code: mcpServers.{SERVER_NAME} in {short_path(self.paths, path)}")

    def codex(self, tcp_env: dict[str, str] | None = None) -> None:
        """Register the bridge with Codex (``[mcp_servers.claude-peers]`` in its config.toml);
        ``tcp_env`` (CLAUDE_PEERS_URL...) makes it reach the broker over TCP."""
        path = self.paths.codex_config
        created = self._created("codex", path)
        where = short_path(self.paths, path)
        try:
            edit_file(path, lambda text: agent_config.codex_toml_add(text, self.command, where, tcp_env))
        except ConfigError as exc:
            self.fail(str(exc))
            return
        self.manifest["codex"] = {"path": str(path), "created": created}
        self.say(f"Codex: [mcp_servers.{SERVER_NAME}] in {where}")
        if tcp_env:
            self.say(f"  over TCP: {tcp_env['CLAUDE_PEERS_URL']} (a sandbox that blocks the UNIX socket lets it through)")
            self.say("  run the broker with TCP on: CLAUDE_PEERS_TCP=1 claude-peers broker"
                     " (or CLAUDE_PEERS_TCP=1 in the service's environment)")

    def allow_tools(self) -> None:
        """Put our tools on Claude Code's permission allow-list (only the missing ones)."""
        path = self.paths.claude_settings
        rules = agent_config.allow_rules()
        created = self._created("allow", path)
        added: list[str] = []

        def change(text: str | None) -> str:
            new_text, newly = agent_config.settings_allow_add(text, rules, short_path(self.paths, path))
            added.extend(newly)
            return new_text

        try:
            edit_file(path, change)
        except ConfigError as exc:
            self.fail(str(exc))
            return
        recorded = self.manifest.get("allow", {}).get("rules", [])
        self.manifest["allow"] = {
            "path": str(path),
            "rules": sorted(set(recorded) | set(added)),
            "created": created,
        }
        self.say(f"Claude Code: {len(rules)} tools allowed in {short_path(self.paths, path)} (kill_peer still asks)")

    def skill(self) -> None:
        """Install our skill as ``~/.claude/skills/claude-peers/SKILL.md``."""
        path = self.paths.skill
        text = shipped_skill()
        before = read_text(path)
        ours = self.manifest.get("skill", {}).get("sha256")
        if before is not None and before != text and _sha(before) != ours:
            self.fail(f"{short_path(self.paths, path)} exists and was not written by claude-peers; left untouched")
            return
        write_text(path, text, new_mode=0o644)
        self.manifest["skill"] = {"path": str(path), "sha256": _sha(text)}
        self.say(f"Skill: {short_path(self.paths, path)}")

    def hooks(self, stop_guard: bool) -> None:
        """Add the prompt hooks to Claude Code's settings and Codex's hooks.json."""
        from claudepeers.cli.install_hooks import add_hooks

        add_hooks(self, stop_guard)

    def service(self, kind: str, settings: Any) -> None:
        """Write the broker's service file with real paths and say how to load it."""
        database: Any = settings.db_path
        if getattr(settings, "db_dsn", None) is not None:
            from claudepeers.common import dsn as dsns

            # The service file is readable by others: never a password in it (libpq reads ~/.pgpass).
            database = dsns.without_password(settings.db_dsn)
            if database != settings.db_dsn:
                self.say("  CLAUDE_PEERS_DB carries a password: it is left out of the service file; "
                         "put it in ~/.pgpass (mode 0600), where libpq finds it")
        rendered = service.render(kind, self.paths.home, self.command, settings.socket_path, database)
        write_text(rendered.path, rendered.text, new_mode=0o644)
        if rendered.log is not None:
            rendered.log.parent.mkdir(parents=True, exist_ok=True)
        self.manifest["service"] = {"path": str(rendered.path), "kind": kind, "sha256": _sha(rendered.text)}
        self.say(f"Service ({kind}): {short_path(self.paths, rendered.path)}")
        self.say(f"  load it:  {rendered.load}")
        self.say(f"  stop it:  claude-peers kill-broker   (unload: {rendered.unload})")


def tcp_settings(settings: Any) -> dict[str, str]:
    """The bridge's environment for reaching this broker over TCP: the URL, and the token
    file when it is not where the bridge would look by default."""
    from claudepeers.common.settings import Settings

    env = {"CLAUDE_PEERS_URL": f"tcp://127.0.0.1:{settings.tcp_port}"}
    default = Settings.from_env({"HOME": str(home_dir())}).token_path
    if settings.token_path != default:
        env["CLAUDE_PEERS_TOKEN_FILE"] = str(settings.token_path)
    return env


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    ]
    optParameters = [
        ("command", None, None, "The claude-peers command to register (default: this one)"),
        ("service-kind", None, None, "systemd or launchd (default: this system's)"),
    ]

    def postOptions(self) -> None:
        """No target flag means Claude Code and Codex; check the service kind."""
        if self["stop-guard"]:
            self["hooks"] = True
        if not any(self[flag] for flag in _TARGET_FLAGS):
            self["claude"] = self["codex"] = True
        if self["service-kind"] not in (None, "systemd", "launchd"):
            raise usage.UsageError("--service-kind must be systemd or launchd")
        if self["tcp"] and not self["codex"]:
            raise usage.UsageError("--tcp goes with --codex")

    def run(self) -> int:
        """Run the chosen steps, record them, print the channels launch line."""
        from claudepeers.common.settings import SettingError, Settings

        try:
            settings = Settings.from_env()
        except SettingError as exc:
            return error(str(exc), EXIT_USAGE)
        if self["command"] and not os.path.isabs(self["command"]):
            return error("--command must be an absolute path", EXIT_USAGE)
        paths = Paths(home_dir())
        installer = Installer(paths, installed_command(self["command"]), not self["config-file"])
        absent = [path for path in paths.shared_configs() if not path.exists()]
        try:
            if self["claude"]:
                installer.claude()
            if self["codex"]:
                installer.codex(tcp_settings(settings) if self["tcp"] else None)
            if self["allow-tools"]:
                installer.allow_tools()
            if self["skill"]:
                installer.skill()
            if self["hooks"]:
                installer.hooks(self["stop-guard"])
            if self["service"]:
                installer.service(self["service-kind"] or default_service_kind(), settings)
        finally:
            # Which files install created, whichever step did it: uninstall deletes them
            # once every step that edited them has left them empty.
            created = set(installer.manifest.get("created_files", []))
            created |= {str(path) for path in absent if path.exists()}
            if created:
                installer.manifest["created_files"] = sorted(created)
            save_manifest(paths, installer.manifest)
        if self["claude"] and not installer.failed:
            print(f"Start Claude Code with channel push:  {CHANNELS_LAUNCH_LINE}")
        return EXIT_FAILED if installer.failed else 0


class UninstallOptions(usage.Options):
    """``claude-peers uninstall [--claude] [--codex] [--service] [--allow-tools] [--skill]``."""

    synopsis = "Usage: claude-peers uninstall [--claude] [--codex] [--service] [--allow-tools] [--skill] [--hooks]"
    longdesc = "With no target flag: everything install added."
    optFlags = [(flag, None, f"Remove what install --{flag} added") for flag in _TARGET_FLAGS]
    optFlags += [("config-file", None, "Edit ~/.claude.json directly even when `claude` is on PATH")]

    def postOptions(self) -> None:
        """No target flag means all of them."""
        if not any(self[flag] for flag in _TARGET_FLAGS):
            for flag in _TARGET_FLAGS:
                self[flag] = True

    def run(self) -> int:
        """Remove what the manifest records (and our server entries, which are ours by name)."""
        from claudepeers.cli.uninstall import Uninstaller

        paths = Paths(home_dir())
        remover = Uninstaller(paths, load_manifest(paths), not self["config-file"])
        for flag in _TARGET_FLAGS:
            if self[flag]:
                getattr(remover, flag.replace("-", "_"))()
        remover.delete_emptied_files()
        save_manifest(paths, remover.manifest)
        if not remover.changed and not remover.failed:
            print("Nothing to uninstall.")
        return EXIT_FAILED if remover.failed else 0
