"""Reaching the broker from a client (bridge, hook, CLI): endpoint, token, autostart.

Clients know the broker only through :mod:`claudepeers.wire.commands` and this module.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.protocols import amp
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from zope.interface import implementer

from claudepeers.common import platforms

from claudepeers.wire import commands as wire
from claudepeers.common import sandbox
from claudepeers.common.settings import Settings, parse_url


class BrokerNotRunning(Exception):
    """No broker answers at the configured address (and autostart is off or failed)."""


def client_endpoint(reactor: Any, settings: Settings, timeout: float = 5.0) -> IStreamClientEndpoint:
    """The endpoint clients connect to: TCP when CLAUDE_PEERS_URL is set, else the socket."""
    if settings.url:
        host, port = parse_url(settings.url)
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return UNIXClientEndpoint(reactor, str(settings.socket_path), timeout=timeout)


def read_token(settings: Settings) -> str:
    """The TCP token from its 0600 file (written by the broker at start)."""
    try:
        return settings.token_path.read_text().strip()
    except OSError as exc:
        raise BrokerNotRunning(
            f"cannot read the TCP token file {settings.token_path}: {exc.strerror}"
        ) from None


def tcp_secret_path(settings: Settings, agent_pid: int, agent_start: float) -> "os.PathLike[str]":
    """Where a bridge keeps the secret of its agent session's TCP peer, beside the token, so
    that a restarted bridge of the same session can resume the peer (the broker asks for it).
    The broker removes it once the session has ended (broker/secretfiles.py)."""
    return settings.token_path.with_name(tcp_secret_name(agent_pid, agent_start))


def tcp_secret_name(agent_pid: int, agent_start: float) -> str:
    """The file name of an agent session's TCP secret (its pid, its start time in 1/100 s)."""
    return f"claude-peers.tcp-{agent_pid}-{round(agent_start * 100)}.secret"


#: What tcp_secret_name gives, to read the session back from a file name.
TCP_SECRET_NAME = re.compile(r"claude-peers\.tcp-(\d+)-(\d+)\.secret")


def load_tcp_secret(settings: Settings, agent_pid: int, agent_start: float) -> str | None:
    """The secret an earlier bridge of this agent session saved, if any."""
    try:
        return open(tcp_secret_path(settings, agent_pid, agent_start)).read().strip() or None
    except OSError:
        return None


def save_tcp_secret(settings: Settings, agent_pid: int, agent_start: float, secret: str) -> bool:
    """Keep the secret in a 0600 file; False when that is not possible (a read-only sandbox:
    then only this bridge process can resume the peer)."""
    try:
        descriptor = os.open(tcp_secret_path(settings, agent_pid, agent_start),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret + "\n")
    except OSError:
        return False
    return True


@inlineCallbacks
def authenticate(protocol: amp.AMP, settings: Settings) -> Any:
    """Present the token when the connection is TCP (no-op on the UNIX socket)."""
    if settings.url:
        yield protocol.callRemote(wire.Authenticate, token=read_token(settings))
    return protocol


def broker_answers(settings: Settings, timeout: float = 0.5) -> bool:
    """A blocking probe: does anything accept connections at the broker's address?"""
    if settings.url:
        host, port = parse_url(settings.url)
        family, address = socket.AF_INET, (host, port)
    else:
        family, address = socket.AF_UNIX, str(settings.socket_path)
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def broker_command(settings: Settings) -> list[str]:
    """The command line that runs a broker in the foreground for these settings."""
    command = [sys.executable, "-m", "claudepeers", "broker", "--socket", str(settings.socket_path)]
    if settings.db_dsn is None:
        # A PostgreSQL DSN reaches the broker through its environment (broker_env), never
        # its command line: other users can read a command line, password and all.
        command += ["--db", str(settings.db_path)]
    return command


def broker_env(settings: Settings) -> dict[str, str]:
    """The environment a started broker gets: ours, with the database of ``settings``."""
    env = dict(os.environ)
    if settings.db_dsn is not None:
        env["CLAUDE_PEERS_DB"] = settings.db_dsn
    return env


def ensure_broker(settings: Settings, wait: float = 8.0) -> bool:
    """Start a broker unless one answers; blocking. Returns True if this call started one.

    A lock file next to the socket makes ten clients starting at once start one broker:
    the first takes the lock, starts it and waits until it answers; the others wait on
    the lock and then find it answering.
    """
    if settings.url:
        if broker_answers(settings):
            return False
        raise BrokerNotRunning(f"no broker answers at {settings.url} (TCP brokers are not autostarted)")
    if broker_answers(settings):
        return False
    if not settings.autostart:
        raise BrokerNotRunning(
            f"no broker at {settings.socket_path} and CLAUDE_PEERS_NO_AUTOSTART is set; "
            "start one with `claude-peers broker` or `twistd -n claude-peers`"
        )
    run_dir = settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(settings.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        platforms.lock_exclusive(lock_fd)
        if broker_answers(settings):
            return False
        log_path = settings.log_path or run_dir / "broker.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                broker_command(settings),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                close_fds=True,
                env={**broker_env(settings), "CLAUDE_PEERS_LOG": str(log_path)},
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if broker_answers(settings, timeout=0.2):
                return True
            if process.poll() is not None:
                raise BrokerNotRunning(
                    f"the broker exited at start (status {process.returncode}); see {log_path}"
                )
            time.sleep(0.02)  # polling a child we just started; there is no event to wait on
        raise BrokerNotRunning(f"the broker did not answer within {wait:.0f} s; see {log_path}")
    finally:
        os.close(lock_fd)


@implementer(IStreamClientEndpoint)
class AutostartEndpoint:
    """The broker's address as a Twisted endpoint that starts a broker when nothing answers.

    A failed connect starts one in a thread (:func:`ensure_broker`: its lock makes ten
    clients starting at once start one broker), then connects again. Without autostart
    (``autostart=False``, ``CLAUDE_PEERS_NO_AUTOSTART``, or a TCP address: TCP brokers are
    not started) a failed connect fails with :class:`BrokerNotRunning`. ``note`` hears each
    failure in words (the bridge shows the last one in its tool errors); ``in_thread`` runs
    the blocking start (the bridge passes its own daemon threads).
    """

    def __init__(
        self,
        reactor: Any,
        settings: Settings,
        autostart: bool = True,
        note: Callable[[str], None] = lambda text: None,
        in_thread: Callable[..., Deferred] = deferToThread,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._autostart = autostart and settings.autostart and not settings.url
        self._note = note
        self._in_thread = in_thread

    def connect(self, factory: Any) -> Deferred:
        """Connect ``factory``'s protocol; on a refused or missing broker, start one and retry."""
        d = client_endpoint(self._reactor, self._settings).connect(factory)
        return d.addErrback(self._not_answered, factory)

    def _not_answered(self, failure: Failure, factory: Any) -> Any:
        failure.trap(ConnectError, OSError)
        sandbox.note_failed_connect(self._settings, failure.value)  # for doctor: a sandbox's refusal?
        self._note(f"no broker answers at {self._settings.url or self._settings.socket_path}")
        if not self._autostart:
            raise BrokerNotRunning(_not_running_text(self._settings, failure.value))

        def not_started(reason: Failure) -> Failure:
            self._note(f"could not start a broker: {reason.getErrorMessage()}")
            return reason

        d = self._in_thread(ensure_broker, self._settings)
        d.addCallbacks(lambda _: client_endpoint(self._reactor, self._settings).connect(factory), not_started)
        return d


@inlineCallbacks
def connect(
    reactor: Any,
    settings: Settings,
    locator: amp.CommandLocator | None = None,
    autostart: bool = True,
) -> Any:
    """Connect (starting the broker if allowed), authenticate, and return the AMP protocol."""
    protocol = amp.AMP(locator=locator) if locator is not None else amp.AMP()
    # The protocol is built only when a connection is made, so a retry after autostart reuses it.
    yield connectProtocol(AutostartEndpoint(reactor, settings, autostart), protocol)
    yield authenticate(protocol, settings)
    return protocol


def _not_running_text(settings: Settings, error: BaseException) -> str:
    where = settings.url or str(settings.socket_path)
    if isinstance(error, ConnectError) and getattr(error, "osError", None) == errno.EACCES:
        return f"permission denied connecting to the broker at {where}"
    return f"no broker is running at {where}"
