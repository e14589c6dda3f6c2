"""The broker's logic: the registry of peer actors, registration, scopes, lifecycle and
reaping. Its parts live beside it: the peer directory and its lookups (directory.py), the
checks of a claimed session (sessions.py), kills (kills.py), names (naming.py), events
(events.py), the message path (mail.py).

No AMP and no SQL here (STYLE habit 1): the protocol layer calls these methods with
plain values and the kernel's credentials of the connection; the store does the SQL;
processes are looked at through an injected ``processes`` object (agents.py by default)
so that tests can stand in for the process table.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Callable, Iterable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger

from claudepeers import __version__

from claudepeers.common import agents

from claudepeers.broker import sessions, views
from claudepeers.broker.approvals import Approvals
from claudepeers.broker.coordination import Coordination
from claudepeers.broker import naming, remotepeers
from claudepeers.broker.credentials import TcpSecrets
from claudepeers.broker.directory import PeerDirectory
from claudepeers.broker.events import EventLog
from claudepeers.broker.kills import Kills
from claudepeers.broker.mail import Mail
from claudepeers.broker.threads import Threads
from claudepeers.broker.peers import PeerActor
from claudepeers.broker.ratelimit import RateLimiter
from claudepeers.broker.registration import Registration
from claudepeers.broker.records import GONE, OFFLINE, ONLINE, Claim, Credentials, PeerRecord, iso
from claudepeers.broker.sessions import CLIENT_TYPES, NO_PUSHES, check_delivery  # noqa: F401 - re-exported
from claudepeers.common.settings import Limits
from claudepeers.common.errors import (
    InvalidArgument,
    LimitExceeded,
    PeerGone,
)

SCOPES = views.SCOPES  # re-exported
#: After a thread peer's bridge disconnects, when to look whether the bridge process ended.
THREAD_EXIT_CHECK_SECONDS = 0.5


class Broker:
    """Registry and router of peers."""

    log = Logger()

    def __init__(
        self,
        store: Any,
        clock: Any,
        limits: Limits | None = None,
        host: str | None = None,
        processes: Any = agents,
        reactor: Any = None,
        info: dict[str, Any] | None = None,
        stop: Callable[[], None] | None = None,
        tcp_key: bytes | None = None,
    ) -> None:
        self.store = store
        # The service keeps the key in a 0600 file, so TCP peers resume across restarts.
        self.tcp_secrets = TcpSecrets(tcp_key)
        #: The bridges' files of those secrets (secretfiles.py), removed as their sessions end.
        self.secret_files: Any = None
        self.limits = limits or Limits()
        self.host = host or socket.gethostname()
        #: The peers of this host by id, name and session (directory.py).
        self.directory = PeerDirectory()
        #: The directory's own dict of peers by id (read by the layers above).
        self.actors: dict[str, PeerActor] = self.directory.actors
        self.info = dict(info or {})
        self._clock = clock
        self._reactor = reactor if reactor is not None else clock
        self._processes = processes
        self.rate = RateLimiter(self.limits.messages_per_minute)
        self.events = EventLog(store, clock)
        #: The periodic reap (every reap_interval_seconds, on the broker's clock): a service
        #: the broker's service composes; in-process tests start it themselves.
        self.reaper = TimerService(self.limits.reap_interval_seconds, self.reap)
        self.reaper.clock = clock
        self._own_reaper = False
        self._stop = stop
        self.started_at = clock.seconds()
        self.counters = {"sent": 0, "shown": 0, "woke": 0, "refused": 0}
        self.mail = Mail(self)
        self.kills = Kills(self, processes, self._reactor)
        self.registration = Registration(self, processes)
        #: Groups, claims and sends to many (coordination.py).
        self.coordination = Coordination(self)
        #: The operator's web page (web/ondemand.py), set by the service; None: no dashboard.
        self.dashboard: Any = None
        # Pending tool approvals (approvals.py); a peer reaped meanwhile is named by its id.
        self.approvals = Approvals(clock, store, self.emit,
                                   lambda peer_id: self.actors[peer_id].name if peer_id in self.actors else peer_id)
        self.threads = Threads(self)
        #: The other hosts of a shared PostgreSQL database (crosshost.Network), None alone.
        self.network: Any = None
        #: Kills across hosts (remotekill.RemoteKills), with a network only.
        self.remote_kills: Any = None

    # --- start and stop ---------------------------------------------------------------

    @inlineCallbacks
    def start(self, reap: bool = True) -> Any:
        """Load stored peers (all offline until their bridges reconnect), then start reaping.

        ``reap=False``: the caller composes :attr:`reaper` into its own service tree (the
        broker's service does, as a child of its ``MultiService``) and starts it there.
        """
        records = yield self.store.load_peers()
        counts = yield self.store.unread_counts()
        self.events.load((yield self.store.recent_events(200)))
        for record in records:
            if self.network is not None and record.host != self.host:
                continue  # another host's peer: the network reads those (crosshost.py)
            if record.state == ONLINE:
                record = dataclasses.replace(record, state=OFFLINE)
            self.directory.add(self._actor(record, counts.get(record.id, 0)))
        yield self.coordination.load()
        self.emit("broker", None, f"broker {__version__} started (pid {os.getpid()})")
        if reap:  # in-process use (tests, benches): the reaper runs alone on the broker's clock
            self._own_reaper = True
            self.reaper.startService()  # reaps at once, then every reap_interval_seconds

    def stop(self) -> None:
        """Stop the broker's own timers (the service stops the reaper it composed, then the
        listeners and the store)."""
        if self._own_reaper and self.reaper.running:
            self.reaper.stopService()
        for actor in self.actors.values():
            actor.stop()
        self.coordination.stop()

    def request_stop(self) -> None:
        """Ask the process to shut down (StopBroker)."""
        self.emit("broker", None, "stop requested")
        if self._stop is not None:
            self._clock.callLater(0, self._stop)

    def _actor(self, record: PeerRecord, unread: int = 0) -> PeerActor:
        # Callers add it to the directory (which rebuilds its name index on the next lookup).
        return PeerActor(record, self.store, self._clock, self.limits.delivery_wait_seconds, unread,
                         on_change=self._records_changed)

    def _records_changed(self) -> None:
        self.directory.changed()
        self.events.touch()  # a summary or state the dashboard shows changed

    @property
    def clock(self) -> Any:
        """The broker's clock (IReactorTime): for timers of the layers above."""
        return self._clock

    def now(self) -> float:
        """The broker's clock."""
        return self._clock.seconds()

    # --- events (see events.py) ---------------------------------------------------------

    def emit(self, kind: str, peer_id: str | None, detail: str, **extra: Any) -> None:
        """Record an event (history, store, live watchers)."""
        self.events.emit(kind, peer_id, detail, **extra)

    # --- identity -----------------------------------------------------------------------

    def verify_session(self, creds: Credentials, agent_pid: int, agent_start: float) -> tuple[int, float]:
        """The claimed agent session as this broker numbers it, checked against the kernel's
        view of the connection; IdentityRejected if not (see :func:`.sessions.verify_session`)."""
        return sessions.verify_session(self._processes, creds, agent_pid, agent_start)

    def session(self, agent_pid: int, agent_start: float, thread_id: str | None = None,
                revive: bool = False) -> PeerActor | None:
        """The live peer of the agent session (pid + start time [+ thread]) on this host, if any.

        With ``revive``, an ended thread peer counts too: a Codex thread unloaded by its
        app-server and resumed later is the same session, with the same id.
        """
        return self.directory.of_session(self.host, agent_pid, agent_start, thread_id, revive)

    # --- registration -----------------------------------------------------------------------

    def register(self, connection: Any, creds: Credentials, claim: Claim) -> Deferred:
        """Create or resume the peer of ``claim``'s agent session and bind ``connection``;
        fires with (actor, resumed) (registration.py)."""
        return self.registration.register(connection, creds, claim)

    def check_name(self, name: str) -> str:
        """A valid name or InvalidArgument / LimitExceeded naming the rule."""
        return naming.check_name(name, self.limits.max_name_chars)

    def _unique_name(self, wanted: str, exclude: str | None, strict: bool) -> str:
        # Names are unique among the live peers of the whole network (DESIGN 7).
        actors = [*self.actors.values(), *remotepeers.live_names(self.network)]
        return naming.unique_name(actors, wanted, exclude, strict, self.limits.max_name_chars)

    @inlineCallbacks
    def set_name(self, actor: PeerActor, name: str) -> Any:
        """Rename a peer; fires with the new name."""
        old = actor.name
        new = self._unique_name(name, exclude=actor.id, strict=True)
        actor.update(name=new)
        yield self.store.save_peer(actor.record)
        if new != old:
            self.emit("rename", actor.id, f"{old} is now {new}", name=new)
        return new

    def set_summary(self, actor: PeerActor, summary: str) -> Deferred:
        """Set what the peer works on (bounded by max_summary_bytes)."""
        if "\x00" in summary:
            raise InvalidArgument("the summary contains a NUL character (U+0000)")
        size = len(summary.encode("utf-8"))
        limit = self.limits.max_summary_bytes
        if size > limit:
            raise LimitExceeded(
                f"summary is {size} bytes; the limit is {limit} (max_summary_bytes, CLAUDE_PEERS_MAX_SUMMARY_BYTES)"
            )
        actor.update(summary=summary, last_seen=self.now())
        return self.store.save_peer(actor.record)

    # --- lookup and listing -------------------------------------------------------------------

    def resolve(self, target: str, allow_gone: bool = False, caller: PeerActor | None = None) -> PeerActor:
        """The peer a target names: its id, else its unique name among live peers.

        An unknown target's candidates are the live peers other than ``caller``.
        """
        target = (target or "").strip()
        if not target:
            raise InvalidArgument("no peer given: pass a peer id or name (see list_peers)")
        if "@" in target:  # name@host or id@host (DESIGN 7)
            name, _, host = target.partition("@")
            if host != self.host:
                return remotepeers.resolve_remote(self, target, allow_gone)
            target = name
        actor = self.directory.exact(target)
        if actor is None and self.network is not None and self.network.find(target):
            return remotepeers.resolve_remote(self, target, allow_gone)
        if actor is None:
            actor = self.directory.ended(target)
        if actor is None:
            raise self.directory.not_found(target, caller)
        if actor.state == GONE and not allow_gone:
            raise PeerGone(
                f"peer {actor.id} ({actor.name}) ended at {iso(actor.record.gone_at)}; "
                "its unread mail stays readable with `claude-peers inbox`"
            )
        return actor

    def list_peers(self, caller: PeerActor | None, scope: str, include_offline: bool = True) -> list[dict[str, Any]]:
        """Live peers in ``scope`` as wire dicts (offline ones unless told not), never the caller (views.py)."""
        return views.list_peers(self, caller, scope, include_offline)

    # --- messages (mail.py) --------------------------------------------------------------------

    def send(self, sender: PeerActor | None, target: str, body: str, client_key: str | None = None,
             verified: bool = True, reply_to: int | None = None) -> Deferred:
        """Commit a message and report what happened (see :meth:`Mail.send`); ``verified``
        is False for a sender the kernel cannot vouch for (a TCP connection); ``reply_to``
        makes it a reply (threads.py)."""
        if target.startswith(("scope:", "group:")):  # names no single peer (names hold no ':')
            return fail(InvalidArgument(f"{target!r} names many peers: send it with SendMany (send_message does)"))
        return self.mail.send(sender, target, body, client_key, verified, reply_to)

    def fetch_unread(self, actor: PeerActor, limit: int | None, claimer: Any = None) -> Deferred:
        """Unacknowledged messages of ``actor`` and how many more there are."""
        return self.mail.fetch_unread(actor, limit, claimer)

    def acknowledge(self, actor: PeerActor, message_ids: Iterable[int], via: Any = None, how: str | None = None) -> Deferred:
        """Mark messages shown (or ``how="woke"``); fires with how many were newly marked."""
        d = self.mail.acknowledge(actor, message_ids, via, how)
        return d.addCallback(self._acknowledged) if self.events.watching else d

    def _acknowledged(self, count: int) -> int:
        self.events.touch()  # unread counts the dashboard shows changed
        return count


    def message_states(self, sender: PeerActor | None, message_ids: Iterable[int]) -> Deferred:
        """What became of messages the caller sent."""
        return self.mail.message_states(sender, message_ids)

    def inbox(self, target: str, limit: int | None) -> Deferred:
        """The operator's read-only view of a peer's mail (gone peers too)."""
        return self.mail.inbox(target, limit)

    # --- lifecycle ----------------------------------------------------------------------------

    def disconnected(self, actor: PeerActor, connection: Any) -> None:
        """A bridge connection closed: offline if the agent lives, gone if it ended."""
        self.threads.closed(actor, connection)
        if actor.detach(connection, self.now()):
            if actor.record.thread_id is not None:
                # One bridge per thread, alive as long as the app-server keeps the thread
                # loaded: its exit (not a reconnect) means the thread has ended.
                self._clock.callLater(THREAD_EXIT_CHECK_SECONDS, self._thread_exit_check, actor, actor.bridge_pid)
            if self._processes.is_alive(actor.record.agent_pid, actor.record.agent_start):
                self.emit("leave", actor.id, f"{actor.name} disconnected (offline; mail is queued)")
                self._save(actor)
            else:
                self._gone(actor)

    def _save(self, actor: PeerActor) -> None:
        """Save a state change nobody waits for; a failure is logged, not lost in a Deferred."""
        self.store.save_peer(actor.record).addErrback(
            lambda failure: None if getattr(failure.value, "reported", False)
            else self.log.failure("saving peer {peer} failed", failure, peer=actor.id)
        )

    def _thread_exit_check(self, actor: PeerActor, bridge_pid: int | None) -> None:
        """A thread peer still offline whose bridge process has ended: its thread has ended."""
        if actor.state == OFFLINE and bridge_pid is not None and not self._processes.is_running(bridge_pid):
            self._gone(actor)

    def _gone(self, actor: PeerActor) -> None:
        actor.mark_gone(self.now())
        self.rate.forget(actor.id)
        self.coordination.peer_gone(actor.id)
        if self.secret_files is not None and self.tcp_secrets.made(actor.record):
            self.secret_files.forget(actor.record)
        self._save(actor)
        self.emit("gone", actor.id, f"{actor.name} ended ({actor.unread} unread messages kept)")

    def reap(self) -> None:
        """Periodic: mark peers whose agent process ended as gone; purge expired data."""
        try:
            for actor in list(self.actors.values()):
                if actor.state == GONE:
                    continue
                if not self._processes.is_alive(actor.record.agent_pid, actor.record.agent_start):
                    self._gone(actor)
            cutoff = self.now() - self.limits.retention_seconds
            expired = [a.id for a in self.actors.values() if a.state == GONE and (a.record.gone_at or 0) < cutoff]
            for peer_id in expired:
                self.directory.remove(peer_id)
            self.store.purge(cutoff).addErrback(
                lambda f: None if getattr(f.value, "reported", False) else self.log.failure("purge failed", f))
            self.threads.index()
        except Exception:  # periodic jobs log and carry on (STYLE habit 6)
            self.log.failure("reaping failed")

    # --- kill -------------------------------------------------------------------------------------

    def kill(self, caller: PeerActor | None, creds: Credentials, target: str, by: str | None = None) -> Deferred:
        """Verified kill of a peer's agent session; fires with (outcome, peer_id, detail).

        ``by`` names an operator other than the CLI in the audit (the dashboard); kills.py."""
        return self.kills.kill(caller, creds, target, by)

    def kill_here(self, actor: PeerActor, caller_id: str) -> Deferred:
        """Kill a peer of this host for ``caller_id`` after the local checks (kills.py)."""
        return self.kills.kill_here(actor, caller_id)

    # --- status -------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Who and how long this broker is, its peers counted by state, and its counters:
        the part `status` and the dashboard's health line share (views.py)."""
        return views.health(self)

    def status(self) -> dict[str, Any]:
        """Health and every known peer, for `claude-peers status` (views.py)."""
        return views.full_status(self)


__all__ = ["Broker", "Claim", "Credentials"]
