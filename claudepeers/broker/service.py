"""The broker service: ``makeService`` for ``twistd claude-peers``, the .tac and ``claude-peers broker``.

``makeService`` only composes (STYLE habit 7); :class:`BrokerService` does, at start:
lock the socket and the database (a second broker refuses with a clear message), create
or upgrade the database, load the peers, then listen on the 0600 UNIX socket inside a
0700 directory (and on 127.0.0.1 TCP with a token when asked). Its periodic work is
``TimerService`` children of it (a ``MultiService``): the reaper, the database file check,
the socket check and, with TCP, the pings. At stop it stops them, stops listening, commits
queued writes, closes the database and removes the socket. The options are options.py's,
the files of the run directory runfiles.py's.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.logger import Logger, globalLogPublisher
from twisted.python.lockfile import FilesystemLock

from claudepeers import __version__
from claudepeers.broker.options import Options  # noqa: F401 - twistd's ServiceMaker reads it here
from claudepeers.broker.ratelimit import WarningThrottle
from claudepeers.broker.runfiles import (  # noqa: F401 - re-exported
    StartupError,
    ensure_token,
    file_id,
    raise_fd_limit,
    secure_directory,
    tcp_key_path,
)
from claudepeers.common import dsn as dsns
from claudepeers.common.settings import Settings


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


def makeService(config: Options, reactor: Any = None, exits_itself: bool = True) -> service.MultiService:
    """The root service of a broker process.

    ``exits_itself``: under twistd (and the .tac) a failed start must end the process with
    status 1 by itself; ``claude-peers broker`` (main.py) passes False and returns the status.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    root = service.MultiService()
    BrokerService(config["settings"], reactor, exits_itself=exits_itself).setServiceParent(root)
    return root


class BrokerService(service.MultiService):
    """Owns the locks, the store, the broker and the listeners of one broker process; its
    children are the periodic jobs, each a ``TimerService`` on the service's reactor."""

    log = Logger()

    def __init__(self, settings: Settings, reactor: Any, own_process: bool = True, exits_itself: bool = True) -> None:
        super().__init__()
        self.settings = settings
        #: True when this service is the whole process (twistd, broker_main): a failed
        #: start stops the reactor. Tests running it in-process pass False.
        self._own_process = own_process
        #: With ``own_process``: whether the service itself must make the exit status 1 (twistd).
        self._exits_itself = exits_itself
        self._reactor = reactor
        self.broker: Any = None
        self.store: Any = None
        self.guard: Any = None
        #: What the database check at start found (a damaged WAL); the guard shows it.
        self.storage_problems: list[str] = []
        self.ports: list[Any] = []
        self.failed: str | None = None
        self._locks: list[FilesystemLock] = []
        self._tcp_factory: Any = None
        self._unix_factory: Any = None
        self._token: str | None = None
        self._tcp_key: bytes | None = None
        self._socket_id: tuple[int, int] | None = None
        self.fd_limit = 0
        self._fd_warning_due = False
        self._throttle = WarningThrottle(self.log, reactor, 10.0)
        self.ready: Any = None
        #: This host's place in the network of a shared PostgreSQL database (joining.py).
        self.joined: Any = None

    def startService(self) -> None:
        """Take the locks and open the database synchronously, then load peers and listen.

        The children (the periodic jobs) are added, and so started, once what they watch exists.
        """
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
        if self._exits_itself:
            # twistd would exit 0 after a failed start, and supervisors need to see a failure.
            # twistd offers a service no exit status (only the signal the reactor stopped on),
            # and a failure can come after the reactor runs (the database pool, a listener), so
            # this one path ends the process itself, after the reactor's shutdown (the log is
            # written by then). `claude-peers broker` returns the status from main() instead.
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
        yield self.guard.start(timer=False)
        self._periodic(self.guard.timer)  # the database file's check, every db_check_seconds
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
        yield self.broker.start(reap=False)
        self._periodic(self.broker.reaper)  # reaps at once, then every reap_interval_seconds
        if self.joined is not None:
            yield self.joined.start()
        # The dashboard listens only once the operator asks for a link (OpenDashboard).
        self.broker.dashboard = DashboardOnDemand(self.broker, self._reactor, settings.dashboard_port)
        if settings.tcp_enabled:
            self._tcp_factory = BrokerFactory(self.broker, token=self._token)
            tcp = yield TCP4ServerEndpoint(self._reactor, settings.tcp_port, interface="127.0.0.1").listen(self._tcp_factory)
            self.ports.append(tcp)
            self._periodic(TimerService(settings.limits.tcp_ping_interval_seconds, self._ping_tcp))
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
        self._socket_id = file_id(settings.socket_path)
        self._periodic(TimerService(settings.limits.socket_check_seconds, self._check_socket))
        self.log.info(
            "claude-peers {version} listening on {socket} (tcp: {tcp}, manhole: {manhole}, descriptors: {fds})",
            version=__version__, socket=str(settings.socket_path), tcp=info["tcp"], manhole=info["manhole"],
            fds=self.fd_limit,
        )

    def _periodic(self, timer: TimerService) -> None:
        """Add a periodic job as a child (started at once: the service runs) on our reactor."""
        timer.clock = self._reactor
        timer.setServiceParent(self)

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
        now = file_id(path)
        if now == self._socket_id:
            return
        what = "was removed" if now is None else "was replaced by another file"
        self.log.critical("the socket {path} {what} while the broker ran; stopping (clients start a new broker)",
                          path=str(path), what=what)
        self.broker.request_stop()

    def _ping_tcp(self) -> None:
        """TCP has no kernel liveness signal: ping every connection; one that does not answer
        within the interval is dropped (its deadline is the protocol's TimeoutMixin)."""
        from claudepeers.broker.protocol import BrokerProtocol

        interval = self.settings.limits.tcp_ping_interval_seconds
        for protocol in list(self._tcp_connections()):
            if isinstance(protocol, BrokerProtocol) and not protocol.closed and protocol.authenticated:
                try:
                    protocol.send_ping(interval)
                except Exception:  # periodic jobs log and carry on (STYLE habit 6): the next connection
                    self.log.failure("pinging a TCP connection failed")

    def _tcp_connections(self) -> list[Any]:
        return list(self._tcp_factory.connections) if self._tcp_factory is not None else []

    @inlineCallbacks
    def stopService(self) -> Any:
        """Stop the periodic jobs and accepting, finish in-flight writes, close the database,
        remove the socket."""
        globalLogPublisher.removeObserver(self._watch_accept_failures)
        yield super().stopService()  # the children: pings, socket check, reaper, file check
        ports, self.ports = self.ports, []
        yield DeferredList([port.stopListening() for port in ports], consumeErrors=True)
        if self.broker is not None:
            dashboard = getattr(self.broker, "dashboard", None)
            if dashboard is not None:
                yield dashboard.stop()
            self.broker.stop()
        if self.joined is not None:
            yield self.joined.stop()
        if self.store is not None:
            yield self.store.close()
        for path in (self.settings.socket_path, self.settings.manhole_path):
            if path == self.settings.socket_path and file_id(path) != self._socket_id:
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
