"""AMP responders of the message path (``Send``, ``FetchUnread``, ``Acknowledge``,
``WaitForMail``, ``MessageState``).

A mixin of :class:`~claudepeers.broker.protocol.BrokerProtocol`: thin as the others, calling
into the Broker (which hands them to :class:`~claudepeers.broker.mail.Mail`). A subclass of
``CommandLocator``, so that AMP's locator finds its responders in the protocol.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from claudepeers.wire import commands as wire


class MailResponders(amp.CommandLocator):
    """The mail commands of one connection (its attributes are the BrokerProtocol's)."""

    broker: Any
    actor: Any
    bridge: bool
    creds: Any

    def _peer(self) -> Any:  # pragma: no cover - the BrokerProtocol's
        raise NotImplementedError

    @wire.Send.responder
    def send(self, to: str, body: str, client_key: str | None = None, reply_to: int | None = None) -> Deferred:
        """Send as this connection's peer (or as the unverified CLI when unbound); over TCP
        the message is marked unverified (the kernel cannot vouch for the sender)."""
        return self.broker.send(self.actor, to, body, client_key, self.creds.transport == "unix", reply_to)

    @wire.FetchUnread.responder
    def fetch_unread(self, limit: int | None = None) -> Deferred:
        """This peer's unacknowledged messages (a hook claims what it gets)."""
        claimer = None if self.bridge else self
        return self.broker.fetch_unread(self._peer(), limit, claimer).addCallback(
            lambda page: {"messages": page[0], "more": page[1]}
        )

    @wire.Acknowledge.responder
    def acknowledge(self, message_ids: list[int], how: str | None = None) -> Deferred:
        """Mark messages shown, or woke (committed before the answer)."""
        return self.broker.acknowledge(self._peer(), message_ids, via=self, how=how).addCallback(
            lambda count: {"acknowledged": count}
        )

    @wire.WaitForMail.responder
    def wait_for_mail(self, limit: int | None = None) -> Deferred:
        """A rewake hook waits for mail no one shows; answered when some comes."""
        actor = self._peer()
        if self.bridge:
            raise wire.InvalidArgument("a bridge cannot wait for mail; a hook connection (after Attach) can")
        return self.broker.mail.wait_for_mail(actor, self, limit)

    @wire.MessageState.responder
    def message_state(self, message_ids: list[int]) -> Deferred:
        """What became of messages this caller sent."""
        return self.broker.message_states(self.actor, message_ids).addCallback(lambda states: {"states": states})
