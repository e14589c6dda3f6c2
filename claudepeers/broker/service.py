"""The broker service: options and ``makeService`` for ``twistd claude-peers`` and the .tac.

``makeService`` only composes (STYLE habit 7); :class:`BrokerService` does, at start:
lock the socket and the database (a second broker refuses with a clear message), create
or upgrade the database, load the peers, then listen on the 0600 UNIX socket inside a
0700 directory (and on 127.0.0.1 TCP with a token when asked). At stop it stops
listening, commits queued writes, closes the database and removes the socket.
"""

from __future__ import annotations

import os
import resource
import secrets
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogPublisher
from twisted.python import usage
from twisted.python.lockfile import FilesystemLock

from claudepeers import __version__
from claudepeers.broker.ratelimit import WarningThrottle
from claudepeers.common import dsn as dsns
from claudepeers.common.settings import SettingError, Settings, check_socket_path


#: Twisted's own lines when accept() fails for want of descriptors (one each, at info level);
#: the broker turns them into one throttled warning, and broker_main leaves them out.
ACCEPT_FAILURES = frozenset({
    "EMFILE encountered; releasing reserved file descriptor.",
    "EMFILE recovery: Closed socket from {address}",
    "Re-reserving EMFILE recovery file descriptor.",
    "Could not accept new connection ({acceptError})",
})


def accept_failure(event: dict) -> bool:
    """Whether a log event is one of Twisted's accept-failure lines."""
    return event.get("log_format") in ACCEPT_FAILURES


class StartupError(Exception):
    """The broker cannot start; the message says why and what to do."""


class Options(usage.Options):
    """``twistd claude-peers`` options; they override the CLAUDE_PEERS_* environment."""

    optParameters = [
        ["socket", "s", None, "UNIX socket path (CLAUDE_PEERS_SOCKET; default ~/.claude/run/claude-peers.sock)"],
        ["db", "d", None, "SQLite database path, or a PostgreSQL URL/DSN (CLAUDE_PEERS_DB; default "
                          "~/.claude-peers.db; a password belongs in ~/.pgpass or CLAUDE_PEERS_DB, not here)"],
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
        if self["db"] and dsns.is_postgres(self["db"]):
            changes["db_dsn"] = self["db"]
        elif self["db"]:
            changes["db_path"] = Path(self["db"]).absolute()
            changes["db_dsn"] = None
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
    """Create ``path`` 0700 if it is missing; an existing one must already be private.

    Only a directory the broker created gets its mode changed (makedirs' mode is masked by
    the umask). An existing directory that others may enter (a 1777 /tmp, say) is refused,
    not chmod'ed: it is not ours to change, and a private subdirectory instead would move
    the socket away from the path every client computes from CLAUDE_PEERS_SOCKET.
    """
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        info = path.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise StartupError(f"the run directory {path} is not a directory") from None
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise StartupError(
                f"the run directory {path} (which holds the socket) is not private: mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}; the broker only changes the mode of a "
                "directory it creates. Point CLAUDE_PEERS_SOCKET into a directory of your own (mode 0700), "
                f"or make this one private (chmod 700 {path})"
            ) from None
        return
    os.chmod(path, 0o700)


def raise_fd_limit() -> int:
    """Raise the soft limit on open descriptors to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # macOS caps it below an unlimited hard limit
        return soft
    return wanted


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


def tcp_key_path(settings: Settings) -> Path:
    """The key that signs TCP peers' secrets: beside the database, whose peers it signs for."""
    return settings.db_path.with_name(settings.db_path.name + ".tcp-key")


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
        self._unix_factory: Any = None
        self._token: str | None = None
        self._tcp_key: bytes | None = None
        self._socket_id: tuple[int, int] | None = None
        self._watch_socket: LoopingCall | None = None
        self.fd_limit = 0
        self._fd_warning_due = False
        self._throttle = WarningThrottle(self.log, reactor, 10.0)
        self.ready: Any = None
        #: This host's place in the network of a shared PostgreSQL database (joining.py).
        self.joined: Any = None

    def startService(self) -> None:
        """Take the locks and open the database synchronously, then load peers and listen."""
        super().startService()
        globalLogPublisher.addObserver(self._watch_accept_failures)
        try:
            self._prepare()
        except StartupError as exc:
            self._fail(str(exc))
            return
        self.ready = self._start_listening()
        self.ready.addErrback(lambda failure: self._fail(f"could not start: {failure.getErrorMessage()}"))

    def _fail(self, why: str) -> None:
        if self.settings.db_dsn is not None:
            why = dsns.scrub(why, self.settings.db_dsn)
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
        from claudepeers.broker.storage import DatabaseError, prepare

        settings = self.settings
        try:
            secure_directory(settings.run_dir)
        except OSError as exc:
            raise StartupError(f"cannot create the run directory {settings.run_dir}: {exc.strerror}") from None
        self._lock(settings.socket_path, "socket")
        if settings.db_dsn is None:
            # One broker per file; brokers sharing a PostgreSQL database are hosts of one network.
            self._lock(settings.db_path, "database")
        try:
            prepare(settings.database, self.storage_problems)
        except DatabaseError as exc:
            raise StartupError(str(exc)) from None
        if os.path.lexists(settings.socket_path):
            # We hold the socket's lock, so whatever is there was left by a crashed broker.
            self.log.info("removing stale socket {path}", path=str(settings.socket_path))
            os.unlink(settings.socket_path)
        self.fd_limit = raise_fd_limit()
        if settings.tcp_enabled:
            try:
                # Written before any listener accepts: a client that finds the broker finds the token.
                self._token = ensure_token(settings.token_path)
                self._tcp_key = ensure_token(tcp_key_path(settings)).encode()
            except OSError as exc:
                raise StartupError(f"cannot write the TCP token or key: {exc}") from None

    @inlineCallbacks
    def _start_listening(self) -> Any:
        from claudepeers.broker.core import Broker
        from claudepeers.broker.manhole import manhole_factory
        from claudepeers.broker.protocol import BrokerFactory
        from claudepeers.broker.secretfiles import SecretFiles
        from claudepeers.broker.web.ondemand import DashboardOnDemand
        from claudepeers.broker.storage import Guard, Store, open_pool

        settings = self.settings
        self.store = Store(open_pool(settings.database))
        db_file = settings.db_path if settings.db_dsn is None else None
        self.guard = Guard(self.store, db_file, settings.limits, self._reactor, self.storage_problems)
        yield self.guard.start()
        info = {
            "socket": str(settings.socket_path),
            "database": settings.database_display,
            "tcp": f"127.0.0.1:{settings.tcp_port}" if settings.tcp_enabled else None,
            "manhole": str(settings.manhole_path) if settings.manhole_path else None,
        }
        self.broker = Broker(self.store, self._reactor, settings.limits, host=self._host_name(), reactor=self._reactor,
                             info=info, stop=self._reactor.stop, tcp_key=self._tcp_key)
        self.broker.secret_files = SecretFiles(settings.token_path.parent)
        self.broker.secret_files.sweep()
        if settings.db_dsn is not None:
            # One host of the network that shares this database (DESIGN 7): its lock first.
            from claudepeers.broker import joining

            self.joined = yield joining.join(self.broker, settings.db_dsn, self._reactor,
                                             f"pid {os.getpid()} on {socket.gethostname()}, socket {settings.socket_path}",
                                             on_lost_host=lambda why: self.broker.request_stop())
        yield self.broker.start()
        if self.joined is not None:
            yield self.joined.start()
        # The dashboard listens only once the operator asks for a link (OpenDashboard).
        self.broker.dashboard = DashboardOnDemand(self.broker, self._reactor, settings.dashboard_port)
        if settings.tcp_enabled:
            self._tcp_factory = BrokerFactory(self.broker, token=self._token)
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
        # The socket last: a client that reaches it finds TCP and the manhole listening too.
        factory = self._unix_factory = BrokerFactory(self.broker)
        old_umask = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            port = yield UNIXServerEndpoint(self._reactor, str(settings.socket_path), mode=0o600).listen(factory)
        finally:
            os.umask(old_umask)
        self.ports.append(port)
        self._socket_id = _file_id(settings.socket_path)
        self._watch_socket = LoopingCall(self._check_socket)
        self._watch_socket.clock = self._reactor
        self._watch_socket.start(settings.limits.socket_check_seconds, now=False)
        self.log.info(
            "claude-peers {version} listening on {socket} (tcp: {tcp}, manhole: {manhole}, descriptors: {fds})",
            version=__version__, socket=str(settings.socket_path), tcp=info["tcp"], manhole=info["manhole"],
            fds=self.fd_limit,
        )

    def _host_name(self) -> str | None:
        """CLAUDE_PEERS_HOST (default: the hostname) on PostgreSQL or when set; else the Broker's default."""
        from claudepeers.broker import hosts

        if self.settings.db_dsn is None and not os.environ.get("CLAUDE_PEERS_HOST"):
            return None
        try:
            return hosts.host_name()
        except hosts.HostNameError as exc:
            raise StartupError(str(exc)) from None

    def _watch_accept_failures(self, event: dict) -> None:
        """A log observer: Twisted could not accept a connection (descriptors ran out)."""
        if accept_failure(event) and not self._fd_warning_due:
            self._fd_warning_due = True  # one warning per burst, outside the observer
            self._reactor.callLater(0, self._out_of_descriptors)

    def _out_of_descriptors(self) -> None:
        self._fd_warning_due = False
        held = sum(len(factory.connections) for factory in (self._unix_factory, self._tcp_factory) if factory)
        self._throttle.warn("descriptors", (
            f"out of file descriptors (limit {self.fd_limit}): new connections are closed at once while the "
            f"{held} open connections are served; raise the limit (ulimit -n, LimitNOFILE) or find who holds them"))

    def _check_socket(self) -> None:
        """Periodic: is our socket still the file at its path? If the run directory or the
        socket was removed (a /tmp cleaner, an ``rm -r``), nobody can reach or stop this
        broker: stop cleanly so that the next client starts a fresh one. (Not recreated in
        place: the socket's lock lived there too, so another broker may have started.)"""
        path = self.settings.socket_path
        now = _file_id(path)
        if now == self._socket_id:
            return
        what = "was removed" if now is None else "was replaced by another file"
        self.log.critical("the socket {path} {what} while the broker ran; stopping (clients start a new broker)",
                          path=str(path), what=what)
        self.broker.request_stop()

    def _ping_tcp(self) -> None:
        """TCP has no kernel liveness signal: ping every connection, drop the silent ones."""
        from claudepeers.broker.protocol import BrokerProtocol
        from claudepeers.wire import commands as wire

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
        globalLogPublisher.removeObserver(self._watch_accept_failures)
        for timer in (self._pinger, self._watch_socket):
            if timer is not None and timer.running:
                timer.stop()
        ports, self.ports = self.ports, []
        yield DeferredList([port.stopListening() for port in ports], consumeErrors=True)
        if self.broker is not None:
            dashboard = getattr(self.broker, "dashboard", None)
            if dashboard is not None:
                yield dashboard.stop()
            self.broker.stop()
        if self.joined is not None:
            yield self.joined.stop()
        if self.guard is not None:
            self.guard.stop()
        if self.store is not None:
            yield self.store.close()
        for path in (self.settings.socket_path, self.settings.manhole_path):
            if path == self.settings.socket_path and _file_id(path) != self._socket_id:
                continue  # not ours any more (removed, or another broker's): leave it
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
                try:
                    lock.unlock()
                except (OSError, ValueError):  # removed with its directory, or taken over
                    pass
        self._locks = []


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None when there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)
