"""Sends to peers of other hosts waiting for their outcome (DESIGN 7, "Delivery across hosts").

The sender's broker committed the message; the recipient's host says by notification how
it went (``shown`` after the acknowledgement's commit, ``woke``, ``queued`` and why). No word
within the recipient's own delivery wait (plus a margin): the sender reads the row and
answers either way. After a reconnect of the listener every waiting row is read again,
since a notification may have been lost meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from claudepeers.broker.peers import QUEUED, SHOWN
from claudepeers.broker.records import Message
from claudepeers.broker.remotepeers import RemotePeer

if TYPE_CHECKING:
    from claudepeers.broker.core import Broker
    from claudepeers.broker.hosts import HostRegistration

#: Extra seconds a sender waits beyond the recipient's own delivery wait.
WAIT_MARGIN_SECONDS = 1.0


class OutcomeWaits:
    """The sends of this host's peers that wait for another host's word, by message id."""

    def __init__(self, broker: "Broker", registration: "HostRegistration") -> None:
        self._broker = broker
        self._registration = registration
        self._waiters: dict[int, _Wait] = {}

    def wait(self, peer: RemotePeer, message: Message, outcome: Callable[[str, str], Any]) -> None:
        """Wait for the recipient's host to say how a committed message went (bounded)."""
        if not self._registration.reachable(peer.host):
            outcome(QUEUED, f"{peer.name}'s host {peer.host} is unreachable (its broker's heartbeat stopped); "
                            "the message is stored and waits for it")
            return
        wait = self._broker.limits.delivery_wait_seconds + WAIT_MARGIN_SECONDS
        timer = self._broker.clock.callLater(wait, self._check_shown, message.id, True)
        self._waiters[message.id] = _Wait(outcome, peer, timer, message.from_id)

    def told(self, message_id: int, status: str, detail: str) -> None:
        """The recipient's host said how a message went: answer its sender."""
        wait = self._waiters.pop(message_id, None)
        if wait is None:
            return
        if wait.timer.active():
            wait.timer.cancel()
        if status == SHOWN:
            wait.peer.unread = max(0, wait.peer.unread - 1)
            detail = f"{wait.peer.name} {detail}" if detail.startswith("has been") else detail
        wait.outcome(status, f"{detail} (on host {wait.peer.host})")

    def _check_shown(self, message_id: int, deadline: bool = False) -> None:
        """Read the row of a message whose outcome we wait for: at the deadline (no word from
        the recipient's host) it answers either way; after a reconnect only if it was shown."""
        wait = self._waiters.get(message_id)
        if wait is None:
            return

        def answer(states: dict[int, Any]) -> None:
            if self._waiters.get(message_id) is not wait:
                return
            shown = message_id in states and states[message_id][1] is not None
            if not shown and not deadline:
                return  # keep waiting for the notification
            del self._waiters[message_id]
            if wait.timer.active():
                wait.timer.cancel()
            if shown:
                wait.peer.unread = max(0, wait.peer.unread - 1)
                wait.outcome(SHOWN, f"{wait.peer.name} has been shown the message (on host {wait.peer.host})")
            else:
                wait.outcome(QUEUED, f"stored; {wait.peer.name}'s broker on host {wait.peer.host} has not "
                                     "said it was shown yet")

        d = self._broker.store.message_states(wait.from_id, [message_id])
        d.addCallback(answer)
        d.addErrback(lambda _: answer({}))

    def __len__(self) -> int:
        """How many sends wait for another host's word."""
        return len(self._waiters)

    def recheck(self) -> None:
        """After a reconnect: read the row of every waiting message (a lost notification)."""
        for message_id in list(self._waiters):
            self._check_shown(message_id)

    def cancel(self) -> None:
        """Stop waiting (the broker stops): no answer comes from here any more."""
        for wait in self._waiters.values():
            if wait.timer.active():
                wait.timer.cancel()
        self._waiters.clear()


@dataclass
class _Wait:
    """A send waiting for the recipient's host: whom to tell, the peer, the deadline's timer."""

    outcome: Callable[[str, str], Any]
    peer: RemotePeer
    timer: Any
    from_id: str
