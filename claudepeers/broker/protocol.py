"""Thin AMP responders: one BrokerProtocol per connection, calling into the Broker.

This layer owns what only a connection knows: the kernel's credentials (on the UNIX
socket, read by :mod:`claudepeers.common.platforms`), whether a TCP connection has shown the
token, which peer the connection is bound to, and turning every failure into a clear AMP
error (never a dropped connection, which is what AMP does with an unexpected exception).
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from claudepeers import __version__
from claudepeers.broker.mail_responders import MailResponders
from claudepeers.broker.operator_responders import OperatorResponders
from claudepeers.broker.thread_responders import ThreadResponders
from claudepeers.wire import commands as wire
from claudepeers.broker.core import Broker, Claim, Credentials
from claudepeers.broker.sessions import check_delivery
from claudepeers.broker import views
from claudepeers.broker.admission import WARN_EVERY_SECONDS, Admission
from claudepeers.broker.approval_commands import ApprovalCommands
from claudepeers.broker.coord_protocol import CoordResponders
from claudepeers.broker.credentials import peer_credentials
from claudepeers.wire.fastamp import LeanAMP
from claudepeers.broker.peers import WOKE, PeerActor
from claudepeers.broker.ratelimit import WarningThrottle
from claudepeers.broker.storage.store import StoreError
from claudepeers.broker.web.responders import DashboardResponders

#: Error descriptions are cut to this many bytes (AMP's limit per value is 65,535).
MAX_ERROR_DESCRIPTION = 2000

#: Commands a connection may call before it is authenticated (TCP) or registered.
OPEN_COMMANDS = {b"Authenticate", b"Hello", b"Ping"}


class BrokerProtocol(MailResponders, OperatorResponders, CoordResponders, Admission, ApprovalCommands, ThreadResponders,
                     LeanAMP, DashboardResponders):
    """One client connection: a bridge, a hook, a watcher or the CLI.

    Here: the connection, the gate, registration and the calls to the bridge. The other
    responders are mixins by subject (mail_responders.py, operator_responders.py,
    coord_protocol.py, approval_commands.py, thread_responders.py, web/responders.py);
    what it may cost before it is bound (token, or a first real command): admission.py.
    """

    log = Logger()

    def __init__(
        self,
        broker: Broker,
        token: str | None = None,
        credentials: Callable[[Any], Credentials] = peer_credentials,
        uid: int | None = None,
    ) -> None:
        super().__init__()
        self.broker = broker
        self._token = token
        self._credentials = credentials
        self._uid = os.getuid() if uid is None else uid
        self.creds = Credentials("unknown")
        self.actor: PeerActor | None = None
        self.bridge = False  # True when pushes for self.actor go to this connection
        self.delivery = "push"
        self.authenticated = False
        self.refusal: str | None = None
        self.closed = False
        self.bound = False
        self._guarded: dict[bytes, Any] = {}
        self._events_of: str | None = None  # over TCP, Watch streams only this peer's events
        self._pinging = False

    # --- connection ----------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Read the kernel's credentials; refuse other users; TCP must authenticate."""
        super().connectionMade()
        self.callLater = self.broker.clock.callLater  # Admission's deadline, on the broker's clock
        self._admit(self.broker.limits)
        self.creds = self._credentials(self.transport)
        if self.creds.transport == "unix":
            self.authenticated = True
            if self.creds.uid == self._uid:
                self._trust_boxes()  # the kernel vouches for the user: the protocol's own bounds
            else:
                self.refusal = (
                    f"uid {self.creds.uid} may not use this broker (it serves uid {self._uid} only)"
                )
                self.log.warn("refused connection from pid {pid}: {why}", pid=self.creds.pid, why=self.refusal)
                # Give the client time to read why before the connection closes.
                self.broker.clock.callLater(2.0, self._close_refused)
        elif self._token is None:
            self.refusal = "TCP is not enabled on this broker"

    def ampBoxReceived(self, box: amp.AmpBox) -> None:  # noqa: N802 - AMP's name
        """A box that is neither a command nor an answer (an empty one, say) cannot be
        answered: drop the connection with a log line rather than AMP's traceback."""
        if amp.COMMAND not in box and amp.ANSWER not in box and amp.ERROR not in box:
            self.log.warn("dropping a connection that sent a box with no command or answer (pid {pid})",
                          pid=self.creds.pid)
            if self.transport is not None:
                self.transport.loseConnection()
            return
        super().ampBoxReceived(box)

    def sendBox(self, box: amp.AmpBox) -> None:
        """Send a box; an error description too long for AMP (it may quote the offending
        argument) is cut short instead of making AMP drop the connection with TooLong."""
        description = box.get(b"_error_description")
        if description is not None and len(description) > MAX_ERROR_DESCRIPTION:
            cut = description[:MAX_ERROR_DESCRIPTION].decode("utf-8", "ignore")
            box[b"_error_description"] = f"{cut}... ({len(description)} bytes in all)".encode()
        super().sendBox(box)

    def _close_refused(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        """Tell the broker the bridge is gone; stop any event stream."""
        self.closed = True
        super().connectionLost(reason)
        self._leave()
        self.broker.events.unwatch(self)
        if self.actor is not None and self.bridge:
            self.broker.disconnected(self.actor, self)
        elif self.actor is not None:
            self.actor.waits.closed(self)  # a hook's claims and waiter end with it

    # --- dispatch: every command passes the gate, every failure becomes an AMP error ----------------

    def locateResponder(self, name: bytes) -> Any:
        """Wrap each responder: gatekeeping first, then clear errors for bad input.

        Built once per command and connection (LeanAMP caches the inner responder too).
        """
        guarded = self._guarded.get(name)
        if guarded is not None:
            return guarded
        try:
            responder = super().locateResponder(name)
        except UnicodeDecodeError:
            # AMP decodes the name as ASCII; a non-ASCII name names no command (UNHANDLED
            # answer) instead of an exception that drops the connection.
            return None
        if responder is None:
            return None

        def guarded(box: amp.AmpBox) -> Any:
            refusal = self._gate(name)
            if refusal is not None:
                return fail(refusal)
            if not self.bound and name not in OPEN_COMMANDS:
                self._bind()
            try:
                answer = responder(box)
            except (KeyError, ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
                return fail(_remote(wire.InvalidArgument, f"malformed arguments for {name.decode(errors='replace')}: {_explain(exc)}"))
            return answer  # an answer box, or a Deferred (failures pass responderFailed)

        self._guarded[name] = guarded
        return guarded

    def _gate(self, name: bytes) -> amp.RemoteAmpError | None:
        if self.refusal is not None:
            return _remote(wire.PermissionDenied, self.refusal)
        if not self.authenticated and name not in OPEN_COMMANDS:
            return _remote(wire.AuthenticationRequired, "send Authenticate with the token from the token file first")
        return None

    def responderFailed(self, failure: Failure, name: bytes) -> Failure:  # noqa: N802 - AMP's style
        """An undeclared failure becomes BrokerUnavailable (the store) or InternalError,
        never an unknown error that would drop the connection."""
        if failure.check(amp.RemoteAmpError):
            return failure
        if failure.check(StoreError):
            if not failure.value.reported:  # else the store's guard logged it, once per episode
                self.log.failure("store failed during {command}", failure, command=name)
            return Failure(_remote(wire.BrokerUnavailable, f"the broker's database failed: {failure.getErrorMessage()}"))
        self.log.failure("unexpected error in {command}", failure, command=name)
        return Failure(_remote(wire.InternalError, f"internal error in {name.decode(errors='replace')}; see the broker log"))

    def _peer(self) -> PeerActor:
        if self.actor is None:
            raise wire.NotRegistered("register first (this connection is not bound to a peer)")
        return self.actor

    # --- remote callbacks to the bridge ---------------------------------------------------------

    def deliver(self, messages: list[dict[str, Any]]) -> Deferred:
        """Push messages to this bridge; fires with their ``shown`` flags."""
        return self.callRemote(wire.Deliver, messages=messages).addCallback(_shown_flags)

    def shown_elsewhere(self, message_ids: list[int]) -> None:
        """Tell the bridge another client (a hook) showed these; it drops its copies."""
        self.callRemote(wire.ShownElsewhere, message_ids=message_ids)

    def event(self, event: dict[str, Any]) -> None:
        """Stream one event to a watcher (no answer expected)."""
        if not self.closed and (self._events_of is None or views.concerns(event, self._events_of)):
            self.callRemote(wire.Event, event=event)

    def send_ping(self, deadline: float) -> None:
        """Ping the client (TCP: no kernel liveness signal); no answer within ``deadline``
        seconds drops the connection. A ping still unanswered keeps its own deadline."""
        if self._pinging:
            return
        self._pinging = True
        # Once bound, TimeoutMixin's one timer (admission.py's deadline before) is the ping's.
        self.setTimeout(deadline)
        self.callRemote(wire.Ping).addBoth(self._pinged)

    def _pinged(self, _: Any) -> None:
        self._pinging = False
        self.setTimeout(None)

    def timeoutConnection(self) -> None:  # noqa: N802 - TimeoutMixin's name
        """A bound connection that did not answer a ping is dropped; before binding, the
        admission deadline passed (admission.py)."""
        if not self.bound:
            super().timeoutConnection()
            return
        self._warn("ping", f"dropping a {self.creds.transport} connection (pid {self.creds.pid}) that did not answer "
                           "a ping in time (tcp_ping_interval_seconds, CLAUDE_PEERS_TCP_PING_SECONDS)")
        if self.transport is not None:
            self.transport.abortConnection()

    def close(self, reason: str) -> None:
        """Drop this connection (replaced by a newer one of the same session)."""
        self.log.info("closing connection of {peer}: {reason}", peer=self.actor.id if self.actor else None, reason=reason)
        self.bridge = False
        if self.transport is not None:
            # Say why first: the old bridge exits instead of reconnecting and taking turns.
            self.callRemote(wire.Superseded, reason=reason)
            self.transport.loseConnection()

    # --- responders ---------------------------------------------------------------------------

    @wire.Authenticate.responder
    def authenticate(self, token: str) -> dict:
        """Check the TCP token in constant time."""
        if self.creds.transport == "unix":
            return {}
        if self._token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            self.log.warn("TCP client presented a wrong token")
            raise wire.PermissionDenied("wrong token (see the token file next to the broker's socket)")
        self.authenticated = True
        self._bind()
        return {}

    @wire.Hello.responder
    def hello(self) -> dict:
        """Who the broker is."""
        return {"version": __version__, "pid": os.getpid(), "protocol": wire.PROTOCOL_VERSION}

    @wire.Ping.responder
    def ping(self) -> dict:
        """Liveness answer."""
        return {}

    @wire.Register.responder
    def register(self, **arguments: Any) -> Deferred:
        """Bind this connection to its agent session's peer (created or resumed)."""
        if self.actor is not None:
            raise wire.AlreadyRegistered(f"this connection is already peer {self.actor.id}")
        claim = Claim(**arguments)

        def bound(result: tuple[PeerActor, bool]) -> dict:
            actor, resumed = result
            self.actor = actor
            self.bridge = claim.delivery != "none"
            secret = self.broker.tcp_secrets.secret(actor.id) if self.creds.transport == "tcp" else None
            return {"peer_id": actor.id, "name": actor.name, "resumed": resumed,
                    "peer": actor.record.to_wire(actor.unread), "secret": secret}

        return maybeDeferred(self.broker.register, self, self.creds, claim).addCallback(bound)

    @wire.Attach.responder
    def attach(self, agent_pid: int, agent_start: float, thread_id: str | None = None,
               secret: str | None = None) -> dict:
        """Bind to an existing peer of the caller's agent session, without taking pushes (hooks)."""
        agent_pid, agent_start = self.broker.verify_session(self.creds, agent_pid, agent_start)
        actor = self.broker.session(agent_pid, agent_start, thread_id)
        if actor is None:
            raise wire.UnknownPeer(f"no peer is registered for agent pid {agent_pid}")
        self.broker.tcp_secrets.check(self.creds, actor, secret)
        self.actor = actor
        self.bridge = False
        return {"peer_id": actor.id, "name": actor.name, "online": actor.connection is not None}

    @wire.Whoami.responder
    def whoami(self) -> dict:
        """This connection's peer."""
        actor = self._peer()
        return {"peer": {**actor.record.to_wire(actor.unread), "delivery": actor.delivery}}

    @wire.ListPeers.responder
    def list_peers(self, scope: str, include_offline: bool | None = None) -> dict:
        """Peers in a scope, never the caller."""
        return {"peers": self.broker.list_peers(self.actor, scope, include_offline is not False)}

    @wire.SetSummary.responder
    def set_summary(self, summary: str) -> Deferred:
        """Set what this peer works on."""
        return self.broker.set_summary(self._peer(), summary).addCallback(lambda _: {})

    @wire.SetDelivery.responder
    def set_delivery(self, delivery: str) -> dict:
        """The bridge says how its agent gets mail now (shown by list_peers, status, doctor)."""
        actor = self._peer()
        if not self.bridge or actor.connection is not self:
            raise wire.InvalidArgument("only the bridge that takes this peer's pushes may set its delivery")
        self.delivery = check_delivery(delivery)
        actor.delivery = delivery
        return {}

    @wire.SetName.responder
    def set_name(self, name: str) -> Deferred:
        """Rename this peer."""
        return self.broker.set_name(self._peer(), name).addCallback(lambda new: {"name": new})

class BrokerFactory(Factory):
    """Builds a BrokerProtocol per connection; ``token`` is set for the TCP listener only."""

    def __init__(self, broker: Broker, token: str | None = None, credentials: Callable[[Any], Credentials] = peer_credentials) -> None:
        self.broker = broker
        self.token = token
        self.credentials = credentials
        self.connections: set[BrokerProtocol] = set()
        #: Connections not yet authenticated (TCP) or registered (UNIX), oldest first (max_unbound).
        self.unbound: dict[BrokerProtocol, None] = {}
        self.throttle = WarningThrottle(BrokerProtocol.log, broker.clock, WARN_EVERY_SECONDS)

    def buildProtocol(self, addr: Any) -> BrokerProtocol:
        """A protocol for one connection."""
        protocol = BrokerProtocol(self.broker, self.token, self.credentials)
        protocol.factory = self
        return protocol


def _shown_flags(answer: dict[str, Any]) -> list[Any]:
    """One flag per message: True (shown), WOKE (the agent was woken to take it) or False."""
    woke = answer.get("woke") or []
    return [True if shown else (WOKE if index < len(woke) and woke[index] else False)
            for index, shown in enumerate(answer["shown"])]


def _remote(error: type[Exception], text: str) -> amp.RemoteAmpError:
    code = wire.COMMON_ERRORS.get(error) or wire.PEER_ERRORS.get(error) or b"INTERNAL_ERROR"
    return amp.RemoteAmpError(code, text)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing argument {exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc.args[0]}"
    return str(exc) or type(exc).__name__
