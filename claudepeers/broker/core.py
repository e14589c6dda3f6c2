"""The broker's logic: the registry of peer actors, scopes, routing, kills (names: naming.py,
events: events.py, the message path: mail.py).

No AMP and no SQL here (STYLE habit 1): the protocol layer calls these methods with
plain values and the kernel's credentials of the connection; the store does the SQL;
processes are looked at through an injected ``processes`` object (agents.py by default)
so that tests can stand in for the process table.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import replace
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from claudepeers import __version__

from claudepeers.common import agents

from claudepeers.broker import killing
from claudepeers.broker.approvals import Approvals
from claudepeers.broker.coordination import Coordination
from claudepeers.broker import containers, naming, remotepeers
from claudepeers.broker.credentials import TcpSecrets
from claudepeers.broker.events import EventLog
from claudepeers.broker.mail import Mail
from claudepeers.broker.threads import Threads
from claudepeers.broker.peers import PeerActor
from claudepeers.broker.ratelimit import RateLimiter
from claudepeers.broker.records import CLI_ID, GONE, OFFLINE, ONLINE, Claim, Credentials, PeerRecord, iso
from claudepeers.common.settings import Limits
from claudepeers.common.errors import (
    AmbiguousPeer,
    IdentityRejected,
    InvalidArgument,
    KillRefused,
    LimitExceeded,
    NotRegistered,
    PeerGone,
    UnknownPeer,
)

SCOPES = ("machine", "directory", "repo", "network")
CLIENT_TYPES = ("claude-code", "codex", "unknown")
#: ``none``: a hook or the CLI, which take no pushes; anything else describes a bridge's path.
NO_PUSHES = "none"
#: The longest delivery description a bridge may give (it is shown in one line of a table).
MAX_DELIVERY_CHARS = 200
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
        self.actors: dict[str, PeerActor] = {}
        self.info = dict(info or {})
        self._clock = clock
        self._reactor = reactor if reactor is not None else clock
        self._processes = processes
        self.rate = RateLimiter(self.limits.messages_per_minute)
        self.events = EventLog(store, clock)
        self._reaper: LoopingCall | None = None
        self._stop = stop
        self.started_at = clock.seconds()
        self.counters = {"sent": 0, "shown": 0, "woke": 0, "refused": 0}
        self._names: dict[str, list[PeerActor]] | None = None
        self.mail = Mail(self)
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
    def start(self) -> Any:
        """Load stored peers (all offline until their bridges reconnect) and start reaping."""
        records = yield self.store.load_peers()
        counts = yield self.store.unread_counts()
        self.events.load((yield self.store.recent_events(200)))
        for record in records:
            if self.network is not None and record.host != self.host:
                continue  # another host's peer: the network reads those (crosshost.py)
            if record.state == ONLINE:
                record = dataclasses.replace(record, state=OFFLINE)
            self.actors[record.id] = self._actor(record, counts.get(record.id, 0))
        self._names = None
        yield self.coordination.load()
        self.emit("broker", None, f"broker {__version__} started (pid {os.getpid()})")
        self.reap()
        self._reaper = LoopingCall(self.reap)
        self._reaper.clock = self._clock
        self._reaper.start(self.limits.reap_interval_seconds, now=False)

    def stop(self) -> None:
        """Stop periodic work (the service closes listeners and the store)."""
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        self.coordination.stop()

    def request_stop(self) -> None:
        """Ask the process to shut down (StopBroker)."""
        self.emit("broker", None, "stop requested")
        if self._stop is not None:
            self._clock.callLater(0, self._stop)

    def _actor(self, record: PeerRecord, unread: int = 0) -> PeerActor:
        # The name index goes stale when the actor joins self.actors (callers reset it).
        return PeerActor(record, self.store, self._clock, self.limits.delivery_wait_seconds, unread,
                         on_change=self._records_changed)

    def _records_changed(self) -> None:
        self._names = None
        self.events.touch()  # a summary or state the dashboard shows changed

    def _live_by_name(self) -> dict[str, list[PeerActor]]:
        """Live peers by name, rebuilt after any record changes (resolve() runs for every send)."""
        names = self._names
        if names is None:
            names = {}
            for actor in self.actors.values():
                if actor.record.state != GONE:
                    names.setdefault(actor.record.name, []).append(actor)
            self._names = names
        return names

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
        """Check a claimed agent session against the kernel's view; IdentityRejected if not.

        The claim must come from the process that opened the connection: its start time,
        read when the broker accepted it, must still be the start time of its pid. A claim
        from another pid namespace (a container sharing the run directory) is read in that
        namespace (containers.py). Returns the session as this broker's namespace numbers it:
        (agent pid, agent start).
        """
        if agent_pid <= 0:
            # psutil raises ValueError for these: it would reach the caller as an internal error.
            raise InvalidArgument(f"agent_pid must be a positive process id, not {agent_pid}")
        if creds.transport == "unix" and creds.pid is not None:
            translated = containers.in_broker_namespace(creds.pid, agent_pid)
            if translated is not None:
                start = agents.process_start(translated)
                if start is None:
                    raise IdentityRejected(f"the claimed agent (pid {translated} out here) has ended")
                agent_pid, agent_start = translated, start
        if agent_pid == 1 or agent_pid == os.getpid():
            raise IdentityRejected(f"pid {agent_pid} is {'init' if agent_pid == 1 else 'the broker'}, not an agent session")
        if creds.transport == "unix":
            if creds.ended:
                raise IdentityRejected(
                    f"the process that opened this connection (pid {creds.pid}) had ended before the broker "
                    "accepted it (or could not be confirmed then)"
                )
            if creds.start is not None and not self._processes.is_alive(creds.pid, creds.start):
                raise IdentityRejected(
                    f"the process that opened this connection (pid {creds.pid}) has ended; "
                    "its pid may now belong to another process"
                )
        if not self._processes.is_alive(agent_pid, agent_start):
            raise IdentityRejected(
                f"agent pid {agent_pid} with start time {agent_start} is not a running process"
            )
        if creds.transport == "unix":
            if creds.pid is None or not self._processes.is_ancestor(agent_pid, creds.pid):
                raise IdentityRejected(
                    f"pid {agent_pid} is not an ancestor of the connecting process (pid {creds.pid})"
                )
        elif creds.address is not None and not self._processes.holds_connection(agent_pid, creds.address):
            # Else a TCP client could take a local agent's session before that agent's bridge does.
            raise IdentityRejected(f"no process of agent pid {agent_pid}'s session holds this TCP connection: "
                                   "over TCP a client may claim only the agent session it runs in")
        return agent_pid, agent_start

    def session(self, agent_pid: int, agent_start: float, thread_id: str | None = None,
                revive: bool = False) -> PeerActor | None:
        """The live peer of the agent session (pid + start time [+ thread]) on this host, if any.

        With ``revive``, an ended thread peer counts too: a Codex thread unloaded by its
        app-server and resumed later is the same session, with the same id.
        """
        for actor in self.actors.values():
            record = actor.record
            if (
                (record.state != GONE or (revive and thread_id is not None))
                and record.thread_id == thread_id
                and record.host == self.host
                and record.agent_pid == agent_pid
                and agents.same_start(record.agent_start, agent_start)
            ):
                return actor
        return None

    # --- registration -----------------------------------------------------------------------

    @inlineCallbacks
    def register(self, connection: Any, creds: Credentials, claim: Claim) -> Any:
        """Create or resume the peer of ``claim``'s agent session and bind ``connection``.

        Fires with (actor, resumed).
        """
        self._check_claim(claim)
        agent_pid, agent_start = self.verify_session(creds, claim.agent_pid, claim.agent_start)
        if (agent_pid, agent_start) != (claim.agent_pid, claim.agent_start):
            claim = replace(claim, agent_pid=agent_pid, agent_start=agent_start)
        now = self.now()
        actor = self._session_for(creds, claim)
        resumed = actor is not None
        fields = dict(
            client_type=claim.client_type, cwd=claim.cwd, git_root=claim.git_root,
            git_common_dir=claim.git_common_dir, branch=claim.branch, tty=claim.tty, repo_id=claim.repo_id,
        )
        if actor is None:
            name = self._unique_name(claim.name or naming.default_name(claim.git_root, claim.cwd), exclude=None, strict=bool(claim.name))
            record = PeerRecord(
                id=self._new_id(creds, claim), host=self.host, agent_pid=claim.agent_pid, agent_start=claim.agent_start,
                name=name, summary="", state=OFFLINE, registered_at=now, last_seen=now, thread_id=claim.thread_id,
                **fields,
            )
            actor = self._actor(record)
            self.actors[record.id] = actor
            self._names = None
        else:
            if claim.name and claim.name != actor.name:
                fields["name"] = self._unique_name(claim.name, exclude=actor.id, strict=True)
            elif actor.state == GONE:  # a revived thread: its name may have been taken meanwhile
                fields["name"] = self._unique_name(actor.name, exclude=actor.id, strict=False)
            actor.update(**fields)
        if claim.delivery != NO_PUSHES:
            connection.delivery = claim.delivery
            actor.attach(connection, now)
            actor.bridge_pid = creds.pid
        yield self.store.save_peer(actor.record)
        self.emit(
            "register", actor.id,
            f"{actor.name} [{claim.client_type}] {'reconnected' if resumed else 'joined'} in {claim.cwd}",
            name=actor.name,
        )
        return (actor, resumed)

    def _session_for(self, creds: Credentials, claim: Claim) -> PeerActor | None:
        """The peer a registration resumes. Over TCP only a TCP-made peer, with its secret; over
        the socket, a TCP-made peer of the session ends (the kernel-verified claim wins, and a
        TCP client holding its secret must not take the session back) and a new one starts."""
        actor = self.session(claim.agent_pid, claim.agent_start, claim.thread_id, revive=True)
        if actor is None:
            return None
        made_over_tcp = self.tcp_secrets.made(actor.record)
        if creds.transport != "unix":
            if not made_over_tcp:
                raise IdentityRejected(f"this agent session is peer {actor.id} ({actor.name}), registered over the "
                                       "UNIX socket; a TCP client cannot register as it")
            self.tcp_secrets.check(creds, actor, claim.secret)
            return actor
        if made_over_tcp:
            self.log.info("peer {peer} made over TCP ends: its agent session registered over the socket", peer=actor.id)
            self._gone(actor)
            return None
        return actor

    def _new_id(self, creds: Credentials, claim: Claim) -> str:
        if creds.transport == "unix":
            return naming.new_id(self.actors.keys() | (self.network.remote.keys() if self.network else set()))
        peer_id = self.tcp_secrets.peer_id(self.host, claim.agent_pid, claim.agent_start, claim.thread_id)
        if peer_id in self.actors:  # an ended peer of the same session (or a 1 in 36^8 chance)
            raise IdentityRejected(f"agent pid {claim.agent_pid}'s session already had peer {peer_id}")
        return peer_id

    def _check_claim(self, claim: Claim) -> None:
        if claim.client_type not in CLIENT_TYPES:
            raise InvalidArgument(f"client_type must be one of {', '.join(CLIENT_TYPES)}, not {claim.client_type!r}")
        check_delivery(claim.delivery)
        if claim.thread_id is not None and not naming.THREAD_ID.fullmatch(claim.thread_id):
            raise InvalidArgument(f"thread_id must be 1 to 64 letters, digits and ._:- characters, not {claim.thread_id!r}")
        if not claim.cwd or not claim.cwd.startswith("/"):
            raise InvalidArgument(f"cwd must be an absolute path, not {claim.cwd!r}")
        for label, value in (("cwd", claim.cwd), ("git_root", claim.git_root),
                             ("git_common_dir", claim.git_common_dir), ("branch", claim.branch), ("tty", claim.tty),
                             ("repo_id", claim.repo_id)):
            if value is not None and len(value) > 4096:
                raise LimitExceeded(f"{label} is longer than 4096 characters")
            if value is not None and "\x00" in value:
                raise InvalidArgument(f"{label} contains a NUL character (U+0000)")

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
        by_id = self.actors.get(target)
        by_name = self._live_by_name().get(target, ())
        if by_id is not None and by_name and by_name[0] is not by_id:
            raise AmbiguousPeer(f"{target!r} is both the id of {by_id.name} and the name of peer {by_name[0].id}; "
                                f"candidates: {_describe([by_id, *by_name])}")
        actor = by_id or (by_name[0] if by_name else None)
        if actor is None and self.network is not None and self.network.find(target):
            return remotepeers.resolve_remote(self, target, allow_gone)
        if actor is None:
            # A name no live peer holds may still name a peer that has ended.
            ended = [a for a in self.actors.values() if a.state == GONE and a.name == target]
            if ended:
                actor = max(ended, key=lambda a: a.record.gone_at or 0)
        if actor is None:
            live = [a for a in self.actors.values() if a.state != GONE and a is not caller]
            lowered = target.lower()
            close = [a for a in live if a.id.startswith(lowered) or a.name.lower().startswith(lowered)]
            if len(close) > 1:
                raise AmbiguousPeer(f"{target!r} matches several peers: {_describe(close)}")
            hint = _describe(close or live) or "no peers are connected"
            raise UnknownPeer(f"no peer has the id or name {target!r}; candidates: {hint}")
        if actor.state == GONE and not allow_gone:
            raise PeerGone(
                f"peer {actor.id} ({actor.name}) ended at {iso(actor.record.gone_at)}; "
                "its unread mail stays readable with `claude-peers inbox`"
            )
        return actor

    def list_peers(self, caller: PeerActor | None, scope: str, include_offline: bool = True) -> list[dict[str, Any]]:
        """Live peers in ``scope`` as wire dicts (offline ones unless told not), never the caller."""
        if scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if scope not in ("machine", "network") and caller is None:
            raise NotRegistered(f"scope {scope!r} needs a registered peer; use scope 'machine'")
        chosen = []
        for actor in self.actors.values():
            if actor is caller or actor.state == GONE or (actor.state == OFFLINE and not include_offline):
                continue
            if scope == "directory" and actor.record.cwd != caller.record.cwd:  # type: ignore[union-attr]
                continue
            if scope == "repo" and _repo_key(actor.record) != _repo_key(caller.record):  # type: ignore[union-attr]
                continue
            chosen.append(actor)
        order = {ONLINE: 0, OFFLINE: 1, GONE: 2}
        chosen.sort(key=lambda a: (order[a.state], a.name))
        listed = [self.coordination.annotate(_with_delivery(a)) for a in chosen]
        if self.network is not None and scope in ("network", "repo"):
            listed += self.network.listed(scope, caller, include_offline)
        return listed

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
                del self.actors[peer_id]
                self._names = None
            self.store.purge(cutoff).addErrback(
                lambda f: None if getattr(f.value, "reported", False) else self.log.failure("purge failed", f))
            self.threads.index()
        except Exception:  # periodic jobs log and carry on (STYLE habit 6)
            self.log.failure("reaping failed")

    # --- kill -------------------------------------------------------------------------------------

    @inlineCallbacks
    def kill(self, caller: PeerActor | None, creds: Credentials, target: str, by: str | None = None) -> Any:
        """Verified kill of a peer's agent session; fires with (outcome, peer_id, detail).

        ``by`` names an operator other than the CLI in the audit (the dashboard)."""
        if creds.transport != "unix":
            raise KillRefused("kill_peer needs the UNIX socket: over TCP the kernel cannot vouch for the caller")
        actor = self.resolve(target, caller=caller)
        caller_id = caller.id if caller is not None else (by or CLI_ID)
        record = actor.record
        if caller is actor:
            raise KillRefused("you cannot kill your own session")
        if record.host != self.host and self.remote_kills is not None:
            # Carried out (and audited) by the target's own broker, never here (DESIGN 7).
            return (yield self.remote_kills.request(caller_id, actor))
        if record.thread_id is not None:
            return (yield self.kill_here(actor, caller_id))  # refused there, as every thread kill
        if creds.pid is not None and record.host == self.host and self._processes.is_ancestor(record.agent_pid, creds.pid):
            raise KillRefused(f"{actor.name} is the agent session you are calling from")
        return (yield self.kill_here(actor, caller_id))

    @inlineCallbacks
    def kill_here(self, actor: PeerActor, caller_id: str) -> Any:
        """Kill a peer of this host for ``caller_id`` (``id@host`` for a caller of another host)
        after the local checks (pid + start time + agent); fires with (outcome, peer_id, detail)."""
        record = actor.record
        if record.thread_id is not None:
            raise KillRefused(f"{actor.name} is one thread of a Codex app-server that runs every interactive "
                              "Codex session of its user; killing it would end them all")
        if record.host != self.host:
            raise KillRefused(f"{actor.name} runs on {record.host}, not on this host")
        try:
            proc = killing.check_agent(record.agent_pid, record.agent_start, record.client_type)
        except killing.NotTheAgent as exc:
            yield self.store.record_kill(self.now(), caller_id, actor.id, record.agent_pid, "refused", str(exc))
            self.emit("kill", actor.id, f"kill of {actor.name} by {caller_id} refused: {exc}")
            raise KillRefused(f"refusing to kill {actor.name}: {exc}") from None
        self.emit("kill", actor.id, f"{caller_id} is killing {actor.name} (pid {record.agent_pid})")
        outcome = yield killing.terminate(self._reactor, proc, self.limits.kill_grace_seconds)
        detail = {
            killing.TERMINATED: f"{actor.name} (pid {record.agent_pid}) ended on SIGTERM",
            killing.KILLED: f"{actor.name} (pid {record.agent_pid}) ignored SIGTERM for "
                            f"{self.limits.kill_grace_seconds:g} s and was killed with SIGKILL",
            killing.SURVIVED: f"{actor.name} (pid {record.agent_pid}) is still running after SIGKILL",
            killing.ALREADY_GONE: f"{actor.name} (pid {record.agent_pid}) had already ended",
        }[outcome]
        yield self.store.record_kill(self.now(), caller_id, actor.id, record.agent_pid, outcome, detail)
        if outcome != killing.SURVIVED and actor.state != GONE:
            self._gone(actor)
        self.emit("kill", actor.id, detail, outcome=outcome, by=caller_id)
        return (outcome, actor.id, detail)

    # --- status -------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Who and how long this broker is, its peers counted by state, and its counters:
        the part `status` and the dashboard's health line share."""
        states = [actor.state for actor in self.actors.values()]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": self.host,
            "started_at": iso(self.started_at),
            "uptime_seconds": round(self.now() - self.started_at, 3),
            "online": states.count(ONLINE),
            "offline": states.count(OFFLINE),
            "gone": states.count(GONE),
            "unread": sum(actor.unread for actor in self.actors.values()),
            "counters": dict(self.counters),
        }

    def status(self) -> dict[str, Any]:
        """Health and every known peer, for `claude-peers status`."""
        peers = sorted(self.actors.values(), key=lambda a: ({ONLINE: 0, OFFLINE: 1, GONE: 2}[a.state], a.name))
        return {
            **self.info,
            **self.health(),
            "peers": [self.coordination.annotate({**_with_delivery(a), "rewake_pid": a.waits.waiter_pid}) for a in peers],
            # Group commits so far and the writes they carried (writes per commit shows the batching).
            "store": {"commits": self.store.batches, "writes": self.store.batched_writes},
            # The database file's health and size (storage/guard.py), when a guard watches it.
            "storage": self.store.guard.status() if getattr(self.store, "guard", None) else {},
            "limits": {k: getattr(self.limits, k) for k in self.limits.__dataclass_fields__},
            **(self.network.status() if self.network is not None else {}),
        }


def _repo_key(record: PeerRecord) -> str:
    return record.git_common_dir or record.cwd


def _describe(actors: Iterable[PeerActor]) -> str:
    return ", ".join(f"{a.name} ({a.id}, {a.state})" for a in actors)


__all__ = ["Broker", "Claim", "Credentials"]


def check_delivery(delivery: str) -> str:
    """A delivery description a bridge may give, or InvalidArgument saying what is wrong."""
    if not isinstance(delivery, str) or not delivery.strip():
        raise InvalidArgument("delivery must describe how the agent gets its mail (e.g. 'inline'), not be empty")
    if len(delivery) > MAX_DELIVERY_CHARS or not delivery.isprintable():
        raise InvalidArgument(f"delivery must be at most {MAX_DELIVERY_CHARS} printable characters")
    return delivery


def _with_delivery(actor: PeerActor) -> dict[str, Any]:
    """A peer as listed: its record, unread count and how it gets its mail."""
    return {**actor.record.to_wire(actor.unread), "delivery": actor.delivery}
