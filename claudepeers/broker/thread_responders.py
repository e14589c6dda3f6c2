"""AMP responders of threads (``WaitForReply``, ``ReadThread``, ``SearchMessages``).

A mixin of :class:`~claudepeers.broker.protocol.BrokerProtocol` (kept apart for size): thin
as the others, calling into :class:`~claudepeers.broker.threads.Threads`. A subclass of
``CommandLocator``, so that AMP's locator finds its responders in the protocol.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from claudepeers.wire import commands as wire


class ThreadResponders(amp.CommandLocator):
    """The thread commands of one connection (its attributes are the BrokerProtocol's)."""

    broker: Any
    actor: Any
    bridge: bool

    def _peer(self) -> Any:  # pragma: no cover - the BrokerProtocol's
        raise NotImplementedError

    @wire.WaitForReply.responder
    def wait_for_reply(self, message_id: int, timeout_seconds: float) -> Deferred:
        """Answered when a reply after ``message_id`` in its thread reaches this peer, or at the timeout."""
        actor = self._peer()
        if not self.bridge:
            raise wire.InvalidArgument("only a peer's bridge can wait for a reply")
        return self.broker.threads.wait_for_reply(actor, self, message_id, timeout_seconds)

    @wire.ReadThread.responder
    def read_thread(self, thread_id: int, before: int | None = None, limit: int | None = None) -> Deferred:
        """This peer's messages of a thread (the CLI: all of them)."""
        return self.broker.threads.read_thread(self.actor, thread_id, before, limit)

    @wire.SearchMessages.responder
    def search_messages(self, text: str, limit: int | None = None) -> Deferred:
        """This peer's messages that contain every word of ``text``."""
        return self.broker.threads.search(self._peer(), text, limit).addCallback(lambda found: {"messages": found})
