"""The broker as a user service: the systemd user unit (Linux) or launchd agent (macOS).

Both run ``<command> broker`` in the foreground with the real socket and database paths.
launchd: ``~/Library/LaunchAgents/com.claude-peers.broker.plist``, loaded into the user's
GUI domain with ``launchctl bootstrap gui/<uid>``, restarted after a crash (``KeepAlive``
with ``SuccessfulExit`` false: a clean ``kill-broker`` stays stopped), its output in
``~/Library/Logs/claude-peers-broker.log``. systemd: ``~/.config/systemd/user/``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape

SYSTEMD_TEMPLATE = "claude-peers.service"
LAUNCHD_TEMPLATE = "com.claude-peers.broker.plist"
LAUNCHD_LABEL = "com.claude-peers.broker"


@dataclass(frozen=True)
class ServiceFile:
    """A rendered service definition: where it goes, its text, and how to load/unload it."""

    kind: str  # "systemd" or "launchd"
    path: Path
    text: str
    load: str
    unload: str
    log: Path | None = None  # where the service's output goes (its folder must exist)


def template_text(name: str) -> str:
    """The text of a shipped template (``claudepeers/service_templates/<name>``)."""
    return resources.files("claudepeers.service_templates").joinpath(name).read_text()


def _systemd_escape(text: str) -> str:
    # Inside double quotes: backslash and quote escaped; % starts a specifier.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-+=:@," for c in arg):
        return arg
    return '"' + _systemd_escape(arg) + '"'


def render_systemd(home: Path, command: list[str], socket: Path, db: Path) -> ServiceFile:
    """The systemd user unit running ``<command> broker`` in the foreground."""
    exec_start = " ".join(_systemd_quote(arg) for arg in [*command, "broker"])
    text = (
        template_text(SYSTEMD_TEMPLATE)
        .replace("@EXEC_START@", exec_start)
        .replace("@SOCKET@", _systemd_escape(str(socket)))
        .replace("@DB@", _systemd_escape(str(db)))
    )
    return ServiceFile(
        kind="systemd",
        path=home / ".config" / "systemd" / "user" / SYSTEMD_TEMPLATE,
        text=text,
        load="systemctl --user daemon-reload && systemctl --user enable --now claude-peers.service",
        unload="systemctl --user disable --now claude-peers.service",
    )


def launchd_log(home: Path) -> Path:
    """Where the launchd agent's stdout and stderr go."""
    return home / "Library" / "Logs" / "claude-peers-broker.log"


def render_launchd(home: Path, command: list[str], socket: Path, db: Path) -> ServiceFile:
    """The launchd agent running ``<command> broker`` in the foreground, restarted on crashes."""
    arguments = "\n".join(f"    <string>{escape(arg)}</string>" for arg in [*command, "broker"])
    path = home / "Library" / "LaunchAgents" / LAUNCHD_TEMPLATE
    log = launchd_log(home)
    text = (
        template_text(LAUNCHD_TEMPLATE)
        .replace("@PROGRAM_ARGUMENTS@", arguments)
        .replace("@SOCKET@", escape(str(socket)))
        .replace("@DB@", escape(str(db)))
        .replace("@LOG@", escape(str(log)))
    )
    quoted = shlex.quote(str(path))
    return ServiceFile(
        kind="launchd",
        path=path,
        text=text,
        # bootstrap refuses a label that is already loaded: unload an older copy first.
        load=f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL} 2>/dev/null; launchctl bootstrap gui/$(id -u) {quoted}",
        unload=f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}",
        log=log,
    )


def render(kind: str, home: Path, command: list[str], socket: Path, db: Path) -> ServiceFile:
    """Render the ``systemd`` or ``launchd`` service file."""
    if kind == "launchd":
        return render_launchd(home, command, socket, db)
    if kind == "systemd":
        return render_systemd(home, command, socket, db)
    raise ValueError(f"unknown service kind {kind!r} (systemd or launchd)")
