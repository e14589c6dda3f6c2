"""The bridge's connection to the broker: reconnecting, registered, answering pushes.

A ``ClientService`` keeps one AMP connection up and, on every new connection, runs
:meth:`BrokerLink._prepare` (authenticate on TCP, then ``Register`` this agent session)
before anyone may use it. After a broker restart the same agent session registers again
and gets the same peer id back; the broker then pushes every message not yet
acknowledged, and the :class:`~claudepeers.bridge.delivery.Inbox` drops those already shown.

Connection lifecycle::

    connecting --connected--> registering --Register ok--> ready
        ^                          |                         |
        +------ backoff <----------+-- failure / lost <------+

Tool calls wait for ``ready`` (a few seconds at most), then fail with a clear text.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import (
    CancelledError, Deferred, TimeoutError, gatherResults, inlineCallbacks, succeed,
)
from twisted.internet.error import ConnectionClosed, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from claudepeers.common import client

from claudepeers.wire import commands as wire
from claudepeers.wire.fastamp import LeanAMP
from claudepeers.common.settings import Settings

from claudepeers.bridge.permissions import PermissionAnswers
from claudepeers.bridge.broker_calls import BrokerTimeout, BrokerUnreachable
from claudepeers.bridge.wake import WOKE

#: How long a tool call waits for the broker connection before it answers an error.
CALL_WAIT_SECONDS = 5.0
#: Commands that do the same when repeated; only they are retried after a lost connection.
SAFE_TO_REPEAT = frozenset(
    {wire.Whoami, wire.ListPeers, wire.FetchUnread, wire.MessageState, wire.SetSummary, wire.SetName,
     wire.Acknowledge, wire.Ping}
)
#: Reconnect quickly after a broker restart, but never hammer a broker that is down.
RETRY_POLICY = backoffPolicy(initialDelay=0.05, maxDelay=2.0, factor=1.6, jitter=lambda: random.random() * 0.05)


class BridgeAMP(PermissionAnswers, LeanAMP):
    """The bridge's end of the AMP connection: it answers the broker's remote callbacks.

    LeanAMP speaks Twisted's AMP wire with less work per box; in a burst of sends the
    bridge's AMP work (a box out and an answer in per message) was a third of its time.
    """

    #: The protocol's own limits on a box from the other end (checked before buffering it).
    max_box_bytes, max_box_keys = wire.BOUND_BOX_BYTES, wire.BOUND_BOX_KEYS

    def __init__(self, link: "BrokerLink") -> None:
        super().__init__()
        self._link = link

    def boxTooLarge(self, what: str) -> None:  # noqa: N802 - LeanAMP's name
        """A box past those limits: one log line, and the connection is dropped."""
        self._link.log.warn("dropping the connection to the broker: it sent {what}", what=what)
        super().boxTooLarge(what)

    @wire.Deliver.responder
    def deliver(self, messages: list[dict[str, Any]]) -> Any:
        """The broker pushes messages, oldest first; answer, for each, whether the agent has seen it.

        A flag is a Deferred while the agent's pipe is full; the answer then waits for all.
        """
        flags = [self._link.on_deliver(message) for message in messages]
        if any(isinstance(flag, Deferred) for flag in flags):
            waits = [flag if isinstance(flag, Deferred) else succeed(flag) for flag in flags]
            return gatherResults(waits, consumeErrors=True).addCallback(_shown_answer)
        return _shown_answer(flags)

    @wire.ShownElsewhere.responder
    def shown_elsewhere(self, message_ids: list[int]) -> dict[str, Any]:
        """A prompt hook of our agent showed these: never show them here."""
        self._link.on_shown_elsewhere(message_ids)
        return {}

    @wire.Superseded.responder
    def superseded(self, reason: str) -> dict[str, Any]:
        """A newer bridge of our agent session took over: make way instead of reconnecting."""
        self._link.on_superseded(reason)
        return {}

    @wire.Ping.responder
    def ping(self) -> dict[str, Any]:
        """Liveness probe from the broker."""
        return {}

    def become_current(self) -> None:
        """Registered: the link uses this connection from now on.

        Called through ClientService's protocol proxy, so that ``self`` here is this
        protocol itself, the one ``connectionLost`` is later called on.
        """
        self.accepted = True
        self._link.current = self

    #: True once registered: only then may ClientService hear that the connection ended.
    accepted = False

    def lost_unannounced(self, reason: Failure) -> None:
        """A connection ClientService rejected (its registration failed) has ended."""
        self.connectionLost(reason)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        super().connectionLost(reason)
        self._link.lost(self, reason)


class VersionSkew(Exception):
    """The broker speaks another version of the wire than this bridge."""


def _shown_answer(flags: list[Any]) -> dict[str, list[bool]]:
    """Deliver's answer: ``shown`` per message, and ``woke`` when the agent was woken for some."""
    answer = {"shown": [flag is True for flag in flags]}
    if any(flag == WOKE for flag in flags):
        answer["woke"] = [flag == WOKE for flag in flags]
    return answer


class _Gate(ProtocolWrapper):
    """Tells ClientService of a connection's end only if its preparation succeeded.

    ClientService forgets a connection whose ``prepareConnection`` failed, but its
    protocol proxy still reports that connection's end later; in any state but
    "connected" that is an automat ``NoTransition`` logged as an unhandled error (seen
    when the bridge stopped while a rejected connection was closing, or when a
    registration was cut off), and while a newer connection is up it would be taken for
    that one's loss. Here a rejected connection's end reaches only our own protocol.
    """

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self.factory.unregisterProtocol(self)
        proxy = self.wrappedProtocol
        if getattr(proxy, "accepted", False):
            proxy.connectionLost(reason)
        else:
            proxy.lost_unannounced(reason)


class _GateFactory(WrappingFactory):
    protocol = _Gate
    noisy = False


@implementer(IStreamClientEndpoint)
class GatedEndpoint:
    """An endpoint whose every connection is behind a :class:`_Gate` (the broker's
    :class:`~claudepeers.common.client.AutostartEndpoint`, for the link's ClientService)."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory: Any) -> Deferred:
        """Connect ``factory``'s protocol behind a gate; fires with that protocol."""
        d = self._endpoint.connect(_GateFactory(factory))
        return d.addCallback(lambda gate: gate.wrappedProtocol)


class BrokerLink:
    """One reconnecting, registered AMP connection to the broker."""

    #: The bridge's permission relay (:mod:`.permissions`), which the broker's answers reach.
    permissions: Any = None

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: Settings,
        registration: Callable[[], Deferred],
        on_deliver: Callable[[dict[str, Any]], Any],  # one message: a flag or a Deferred of one
        on_registered: Callable[[dict[str, Any]], None] = lambda answer: None,
        on_shown_elsewhere: Callable[[list[int]], None] = lambda ids: None,
        on_lost: Callable[[], None] = lambda: None,
        call_wait: float = CALL_WAIT_SECONDS,
        on_superseded: Callable[[str], None] = lambda reason: None,
        in_thread: Callable[..., Deferred] = deferToThread,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._registration = registration
        self.on_deliver = on_deliver
        self._on_registered = on_registered
        self.on_shown_elsewhere = on_shown_elsewhere
        self._on_lost = on_lost
        self.on_superseded = on_superseded
        self._call_wait = call_wait
        self.reactor, self.call_timeout = reactor, settings.limits.call_timeout_seconds  # also for tools_threads
        self.identity: dict[str, Any] | None = None
        self._tcp_secret: str | None = None
        self.last_error = "still connecting"
        self.current: BridgeAMP | None = None
        factory = Factory.forProtocol(lambda: BridgeAMP(self))  # type: ignore[arg-type]
        factory.noisy = False
        self._service = ClientService(
            GatedEndpoint(client.AutostartEndpoint(reactor, settings, note=self._note, in_thread=in_thread)),
            factory,
            retryPolicy=RETRY_POLICY,
            clock=reactor,
            prepareConnection=self._prepare,
        )

    def start(self) -> None:
        """Begin connecting (and keep reconnecting) in the background."""
        self._service.startService()

    def stop(self) -> Deferred:
        """Disconnect and stop reconnecting."""
        return self._service.stopService()

    def when_ready(self) -> Deferred:
        """Fires with the protocol once connected and registered."""
        return self._service.whenConnected()

    def _note(self, text: str) -> None:
        self.last_error = text

    @inlineCallbacks
    def _prepare(self, protocol: BridgeAMP) -> Any:
        """Authenticate and register on every new connection, before anyone may use it."""
        try:
            yield client.authenticate(protocol, self._settings)
            hello = yield protocol.callRemote(wire.Hello)
            if hello["protocol"] != wire.PROTOCOL_VERSION:
                # An older broker still running after an upgrade pushes in a form this bridge
                # cannot read: say so instead of failing every push.
                raise VersionSkew(
                    f"the running broker (pid {hello['pid']}, claude-peers {hello['version']}) speaks "
                    f"protocol {hello['protocol']} and this bridge {wire.PROTOCOL_VERSION}; restart the "
                    "broker with `claude-peers kill-broker` (the next tool call starts a new one)"
                )
            arguments = yield self._registration()
            if self._settings.url:
                # Over TCP, resuming our peer needs the secret its first registration got
                # (kept by us, or saved by an earlier bridge of the same agent session).
                session = (self._settings, arguments["agent_pid"], arguments["agent_start"])
                secret = self._tcp_secret or client.load_tcp_secret(*session)
                if secret is not None:
                    arguments = {**arguments, "secret": secret}
            answer = yield protocol.callRemote(wire.Register, **arguments)
        except Exception as error:
            self._note(f"registration failed: {error}")
            self.log.warn("registration failed: {error}", error=error)
            if protocol.transport is not None:
                protocol.transport.loseConnection()  # ClientService forgets it: close it here
            raise
        self.identity = answer
        if answer.get("secret") and answer["secret"] != self._tcp_secret:
            self._tcp_secret = answer["secret"]
            if not client.save_tcp_secret(self._settings, arguments["agent_pid"], arguments["agent_start"],
                                          answer["secret"]):
                self.log.warn("could not save the TCP peer's secret beside the token; a restarted bridge "
                              "of this session will not resume its peer")
        protocol.become_current()
        self.last_error = ""
        self.log.info(
            "registered as {peer_id} ({name}), resumed={resumed}",
            peer_id=answer["peer_id"],
            name=answer["name"],
            resumed=answer["resumed"],
        )
        self._on_registered(answer)

    def lost(self, protocol: BridgeAMP, reason: Failure) -> None:
        """A connection ended; the service reconnects by itself."""
        if protocol is self.current:
            self.current = None
            self._note("the connection to the broker was lost; reconnecting")
            self._on_lost()

    def call(self, command: type[amp.Command], deadline: float | None = None, **arguments: Any) -> Deferred:
        """Call ``command`` once registered; BrokerUnreachable when that takes too long.

        A connection that dies under a call is detected only when the reactor reads its
        end; commands that are safe to repeat are then sent again on the next connection.
        Every call has a deadline (``CLAUDE_PEERS_CALL_TIMEOUT_SECONDS``): a broker that
        is stopped or stuck answers nothing, and the agent must not wait with it. An
        answer that comes after the deadline is dropped (a Deferred cancelled without a
        canceller ignores its late result); a Send is keyed, so its retry is stored once.
        """
        protocol = self.current
        if protocol is None:
            d = self._call_when_ready(command, arguments, first_attempt=True)
        else:
            d = protocol.callRemote(command, **arguments)
            d.addErrback(self._lost_during_call, protocol, command, arguments, True)
        deadline = self.call_timeout if deadline is None else deadline  # a long wait_for_reply has its own
        return d.addTimeout(deadline, self._reactor, onTimeoutCancel=self._timed_out)

    def _timed_out(self, result: Any, timeout: float) -> Any:
        if isinstance(result, Failure) and result.check(CancelledError):
            waiting = "" if self.current is not None else self.last_error or "not connected"
            raise BrokerTimeout(timeout, waiting)
        return result

    @inlineCallbacks
    def _call_when_ready(self, command: type[amp.Command], arguments: dict[str, Any], first_attempt: bool) -> Any:
        protocol = yield self._registered_protocol()
        try:
            answer = yield protocol.callRemote(command, **arguments)
        except (ConnectionClosed, ConnectionDone, ConnectionLost):
            answer = yield self._lost_during_call(Failure(), protocol, command, arguments, first_attempt)
        return answer

    def _lost_during_call(
        self, failure: Failure, protocol: BridgeAMP, command: type[amp.Command], arguments: dict[str, Any],
        first_attempt: bool,
    ) -> Any:
        failure.trap(ConnectionClosed, ConnectionDone, ConnectionLost)
        if protocol is self.current:
            self.current = None
        repeatable = command in SAFE_TO_REPEAT or (command is wire.Send and arguments.get("client_key"))
        if first_attempt and repeatable:
            # Let the service see the loss first, or it hands us the dead one again.
            d = deferLater(self._reactor, 0, lambda: None)
            d.addCallback(lambda _: self._call_when_ready(command, arguments, first_attempt=False))
            return d
        if command is wire.Send:
            raise BrokerUnreachable(
                "the connection to the broker was lost while sending; the message may not "
                "have been stored, so send it again"
            )
        raise BrokerUnreachable("the connection to the broker was lost during the call")

    @inlineCallbacks
    def _registered_protocol(self) -> Any:
        protocol = self.current
        if protocol is None:
            # Not registered (yet, or any more): wait a little for the service.
            waiting = self._service.whenConnected()
            waiting.addTimeout(self._call_wait, self._reactor)
            try:
                protocol = yield waiting
            except (TimeoutError, CancelledError):
                raise BrokerUnreachable(self.last_error or "no connection") from None
        return protocol

    def acknowledge(self, ids: list[int]) -> Deferred:
        """Tell the broker these messages were shown; a failure is only logged (a lost one is
        repaired after the reconnect: the broker pushes again, the inbox says "already shown")."""
        d = self.call(wire.Acknowledge, message_ids=ids)
        d.addErrback(lambda failure: self.log.warn("acknowledge failed: {f}", f=failure.getErrorMessage()))
        return d


class AsyncBroker:
    """The tools' view of the link: ``await call(...)`` from asyncio code."""

    def __init__(self, link: BrokerLink) -> None:
        self._link = link

    async def call(self, command: type, **arguments: Any) -> dict[str, Any]:
        """Run the Twisted call and await it from the asyncio loop the reactor runs on."""
        loop = asyncio.get_running_loop()
        return await self._link.call(command, **arguments).asFuture(loop)
