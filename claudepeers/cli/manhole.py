"""``claude-peers manhole``: the broker's Python shell in this terminal.

The broker serves conch's Manhole over an insults terminal straight on a 0600 UNIX
socket (no SSH, no telnet), so the client is a byte relay with the terminal in raw
mode. No reactor is needed: one ``select`` loop. When stdin is not a terminal (a pipe,
a test), the input is relayed as typed keys and, at its end, an empty line and Ctrl-D
ask the shell to close, so every answer is printed before the connection ends.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.python import usage

from claudepeers.cli.main import EXIT_FAILED, EXIT_NO_BROKER, EXIT_PERMISSION, EXIT_USAGE, error

#: What a piped stdin's end becomes: finish the current line, then Ctrl-D on an empty line.
END_OF_INPUT = b"\r\x04"


def manhole_path(explicit: str | None, settings: Any) -> Path:
    """The manhole socket: ``--socket``, else CLAUDE_PEERS_MANHOLE, else the default beside
    the broker's socket when it exists, else wherever the running broker says it serves it."""
    if explicit:
        return Path(explicit)
    if settings.manhole_path:
        return Path(settings.manhole_path)
    default = settings.run_dir / "claude-peers.manhole"
    if os.path.lexists(default):
        return default
    from claudepeers.wire import commands as wire
    from claudepeers.common.client import broker_answers
    from claudepeers.cli.runner import call_once

    if broker_answers(settings):
        answer = call_once(settings, wire.Status)
        if isinstance(answer, dict) and answer["status"].get("manhole"):
            return Path(answer["status"]["manhole"])
    return default


def relay(sock: socket.socket, stdin_fd: int, stdout_fd: int, piped: bool) -> None:
    """Copy stdin to the socket and the socket to stdout until the broker closes it."""
    stdin_open = True
    while True:
        readable, _, _ = select.select([sock, stdin_fd] if stdin_open else [sock], [], [])
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            os.write(stdout_fd, data)
        if stdin_open and stdin_fd in readable:
            data = os.read(stdin_fd, 4096)
            if data:
                if piped:
                    data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
                sock.sendall(data)
            else:
                stdin_open = False
                sock.sendall(END_OF_INPUT)


class ManholeOptions(usage.Options):
    """``claude-peers manhole [--socket PATH]``."""

    synopsis = "Usage: claude-peers manhole [--socket PATH]"
    longdesc = (
        "Opens the Python shell inside the running broker (started with --manhole PATH, "
        "--manhole-default or CLAUDE_PEERS_MANHOLE). Ctrl-D on an empty line leaves."
    )
    optParameters = [("socket", "s", None, "The manhole's UNIX socket")]

    def run(self) -> int:
        """Connect the terminal to the manhole and relay until the shell closes."""
        from claudepeers.common.settings import SettingError, Settings

        try:
            settings = Settings.from_env()
        except SettingError as exc:
            return error(str(exc), EXIT_USAGE)
        path = manhole_path(self["socket"], settings)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EACCES, errno.EPERM):
                return error(f"permission denied opening the manhole at {path}", EXIT_PERMISSION)
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return error(
                    f"no manhole at {path}: start the broker with --manhole-default "
                    "(or --manhole PATH / CLAUDE_PEERS_MANHOLE)",
                    EXIT_NO_BROKER,
                )
            return error(f"cannot open the manhole at {path}: {exc.strerror}", EXIT_FAILED)
        stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
        interactive = os.isatty(stdin_fd)
        with sock:
            if not interactive:
                relay(sock, stdin_fd, stdout_fd, piped=True)
                return 0
            import termios
            import tty

            saved = termios.tcgetattr(stdin_fd)
            sys.stderr.write(f"claude-peers manhole at {path} (Ctrl-D on an empty line leaves)\r\n")
            try:
                tty.setraw(stdin_fd)
                relay(sock, stdin_fd, stdout_fd, piped=False)
            finally:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
                sys.stderr.write("\n")
        return 0
