"""The broker service: options and ``makeService`` for ``twistd claude-peers`` and the .tac.

``makeService`` only composes (STYLE habit 7); :class:`BrokerService` does, at start:
lock the socket and the database (a second broker refuses with a clear message), create
or upgrade the database, load the peers, then listen on the 0600 UNIX socket inside a
0700 directory (and on 127.0.0.1 TCP with a token when asked). At stop it stops
listening, commits queued writes, closes the database and removes the socket.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.lockfile import FilesystemLock

from . import __version__
from .settings import SettingError, Settings, check_socket_path


class StartupError(Exception):
    """The broker cannot start; the message says why and what to do."""


class Options(usage.Options):
    """``twistd claude-peers`` options; they override the CLAUDE_PEERS_* environment."""

    optParameters = [
        ["socket", "s", None, "UNIX socket path (CLAUDE_PEERS_SOCKET; default ~/.claude/run/claude-peers.sock)"],
        ["db", "d", None, "SQLite database path (CLAUDE_PEERS_DB; default ~/.claude-peers.db)"],
        ["tcp", None, None, "also listen on 127.0.0.1:PORT with a token (CLAUDE_PEERS_TCP=1 uses CLAUDE_PEERS_PORT)"],
        ["manhole", None, None, "serve a Python shell on this UNIX socket path (CLAUDE_PEERS_MANHOLE)"],
    ]
    optFlags = [["manhole-default", None, "serve the manhole on <run dir>/claude-peers.manhole"]]

    def postOptions(self) -> None:
        """Merge options into settings (environment first, options win)."""
        try:
            settings = Settings.from_env()
        except SettingError as exc:
            raise usage.UsageError(str(exc)) from None
        changes: dict[str, Any] = {}
        if self["socket"]:
            changes["socket_path"] = Path(self["socket"]).absolute()
            if not os.environ.get("CLAUDE_PEERS_TOKEN_FILE"):
                changes["token_path"] = changes["socket_path"].parent / "claude-peers.token"
        if self["db"]:
            changes["db_path"] = Path(self["db"]).absolute()
        if self["tcp"]:
            try:
                changes["tcp_port"] = int(self["tcp"])
            except ValueError:
                raise usage.UsageError(f"--tcp takes a port number, not {self['tcp']!r}") from None
            changes["tcp_enabled"] = True
        settings = settings.with_changes(**changes)
        try:
            if self["socket"]:
                check_socket_path(settings.socket_path, "--socket")
            if self["manhole"]:
                check_socket_path(Path(self["manhole"]).absolute(), "--manhole")
        except SettingError as exc:
            raise usage.UsageError(str(exc)) from None
        if self["manhole"]:
            settings = settings.with_changes(manhole_path=Path(self["manhole"]).absolute())
        elif self["manhole-default"]:
            settings = settings.with_changes(manhole_path=settings.run_dir / "claude-peers.manhole")
        self["settings"] = settings


def makeService(config: Options, reactor: Any = None) -> service.MultiService:
    """The root service of a broker process."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    root = service.MultiService()
    BrokerService(config["settings"], reactor).setServiceParent(root)
    return root


def secure_directory(path: Path) -> None:
    """Create ``path`` if needed and make it 0700 (makedirs' mode is masked by the umask)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def ensure_token(path: Path) -> str:
    """The TCP token, created at random in a 0600 file when missing."""
    if path.exists():
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


class BrokerService(service.Service):
    """Owns the locks, the store, the broker and the listeners of one broker process."""

    log = Logger()

    def __init__(self, settings: Settings, reactor: Any, own_process: bool = True) -> None:
        self.settings = settings
        #: True when this service is the whole process (twistd, broker_main): a failed
        #: start stops the reactor and exits 1. Tests running it in-process pass False.
        self._own_process = own_process
        self._reactor = reactor
        self.broker: Any = None
        self.store: Any = None
        self.guard: Any = None
        #: What the database check at start found (a damaged WAL); the guard shows it.
        self.storage_problems: list[str] = []
        self.ports: list[Any] = []
        self.failed: str | None = None
        self._locks: list[FilesystemLock] = []
        self._pinger: LoopingCall | None = None
        self._tcp_factory: Any = None
        self.ready: Any = None

    def startService(self) -> None:
        """Take the locks and open the database synchronously, then load peers and listen."""
        super().startService()
        try:
            self._prepare()
        except StartupError as exc:
            self._fail(str(exc))
            return
        self.ready = self._start_listening()
        self.ready.addErrback(lambda failure: self._fail(f"could not start: {failure.getErrorMessage()}"))

    def _fail(self, why: str) -> None:
        self.failed = why
        self.log.critical("claude-peers broker cannot start: {why}", why=why)
        print(f"claude-peers: {why}", file=sys.stderr)
        self._release_locks()
        if not self._own_process:
            return
        # twistd would exit 0 after a failed start; supervisors need to see a failure.
        self._reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self._reactor.running:
            self._reactor.stop()
        else:
            self._reactor.callWhenRunning(self._reactor.stop)

    def _lock(self, path: Path, what: str) -> None:
        lock = FilesystemLock(str(path) + ".lock")
        if not lock.lock():
            try:
                holder = os.readlink(str(path) + ".lock")
            except OSError:
                holder = "?"
            raise StartupError(f"another broker (pid {holder}) is already using the {what} {path}")
        self._locks.append(lock)

    def _prepare(self) -> None:
        from .storage import DatabaseError, prepare

        settings = self.settings
        try:
            secure_directory(settings.run_dir)
        except OSError as exc:
            raise StartupError(f"cannot create the run directory {settings.run_dir}: {exc.strerror}") from None
        self._lock(settings.socket_path, "socket")
        self._lock(settings.db_path, "database")
        try:
            prepare(settings.db_path, self.storage_problems)
        except DatabaseError as exc:
            raise StartupError(str(exc)) from None
        if os.path.lexists(settings.socket_path):
            # We hold the socket's lock, so whatever is there was left by a crashed broker.
            self.log.info("removing stale socket {path}", path=str(settings.socket_path))
            os.unlink(settings.socket_path)

    @inlineCallbacks
    def _start_listening(self) -> Any:
        from .broker import Broker
        from .manhole import manhole_factory
        from .protocol import BrokerFactory
        from .storage import Guard, Store, open_pool

        settings = self.settings
        self.store = Store(open_pool(str(settings.db_path)))
        self.guard = Guard(self.store, settings.db_path, settings.limits, self._reactor, self.storage_problems)
        yield self.guard.start()
        info = {
            "socket": str(settings.socket_path),
            "database": str(settings.db_path),
            "tcp": f"127.0.0.1:{settings.tcp_port}" if settings.tcp_enabled else None,
            "manhole": str(settings.manhole_path) if settings.manhole_path else None,
        }
        self.broker = Broker(self.store, self._reactor, settings.limits, reactor=self._reactor, info=info,
                             stop=self._reactor.stop)
        yield self.broker.start()
        factory = BrokerFactory(self.broker)
        old_umask = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            port = yield UNIXServerEndpoint(self._reactor, str(settings.socket_path), mode=0o600).listen(factory)
        finally:
            os.umask(old_umask)
        self.ports.append(port)
        if settings.tcp_enabled:
            token = ensure_token(settings.token_path)
            self._tcp_factory = BrokerFactory(self.broker, token=token)
            tcp = yield TCP4ServerEndpoint(self._reactor, settings.tcp_port, interface="127.0.0.1").listen(self._tcp_factory)
            self.ports.append(tcp)
            self._pinger = LoopingCall(self._ping_tcp)
            self._pinger.clock = self._reactor
            self._pinger.start(settings.limits.tcp_ping_interval_seconds, now=False)
        if settings.manhole_path:
            if os.path.lexists(settings.manhole_path):
                os.unlink(settings.manhole_path)
            namespace = lambda: {"broker": self.broker, "actors": self.broker.actors, "store": self.store,  # noqa: E731
                                 "service": self, "reactor": self._reactor, "settings": self.settings}
            old_umask = os.umask(0o177)
            try:
                manhole_port = yield UNIXServerEndpoint(
                    self._reactor, str(settings.manhole_path), mode=0o600
                ).listen(manhole_factory(namespace))
            finally:
                os.umask(old_umask)
            self.ports.append(manhole_port)
        self.log.info(
            "claude-peers {version} listening on {socket} (tcp: {tcp}, manhole: {manhole})",
            version=__version__, socket=str(settings.socket_path), tcp=info["tcp"], manhole=info["manhole"],
        )

    def _ping_tcp(self) -> None:
        """TCP has no kernel liveness signal: ping every connection, drop the silent ones."""
        from .protocol import BrokerProtocol
        from . import wire

        interval = self.settings.limits.tcp_ping_interval_seconds
        for protocol in list(self._tcp_connections()):
            if not isinstance(protocol, BrokerProtocol) or protocol.closed or not protocol.authenticated:
                continue
            timer = self._reactor.callLater(interval, protocol.transport.abortConnection)
            d = protocol.callRemote(wire.Ping)
            d.addBoth(lambda result, timer=timer: timer.cancel() if timer.active() else None)

    def _tcp_connections(self) -> list[Any]:
        return list(self._tcp_factory.connections) if self._tcp_factory is not None else []

    @inlineCallbacks
    def stopService(self) -> Any:
        """Stop accepting, finish in-flight writes, close the database, remove the socket."""
        super().stopService()
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        ports, self.ports = self.ports, []
        yield DeferredList([port.stopListening() for port in ports], consumeErrors=True)
        if self.broker is not None:
            self.broker.stop()
        if self.guard is not None:
            self.guard.stop()
        if self.store is not None:
            yield self.store.close()
        for path in (self.settings.socket_path, self.settings.manhole_path):
            if path is not None and self.failed is None and os.path.lexists(path):
                try:
                    os.unlink(path)
                except OSError as exc:
                    self.log.warn("could not remove {path}: {err}", path=str(path), err=exc.strerror)
        self._release_locks()
        self.log.info("claude-peers broker stopped")

    def _release_locks(self) -> None:
        for lock in self._locks:
            if lock.locked:
                lock.unlock()
        self._locks = []
