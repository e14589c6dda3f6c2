"""Waiting for a reply: the broker's half of ``wait_for_reply``, for one peer.

A peer that delegated a task calls ``wait_for_reply(message_id, timeout)``; its bridge sends
``WaitForReply`` and the broker answers it when a reply in that message's thread reaches the
peer, or when the time is up. Nothing polls: the message's arrival answers the call. Pure
logic (no AMP, no SQL, no clock): the actor hands it every message it accepts, the broker's
thread logic (threads.py) arms waiters, feeds them what the store already holds, and ends
them.

The rules:

- A waiter takes a message addressed to its peer whose thread is the waiter's and whose id
  is above the waiter's ``after`` id (the message waited on). A taken message is not pushed
  to the bridge: the waiter's answer carries it, and the bridge acknowledges it once it is
  in the tool's result (the sender then hears ``shown``). Several waiters of one thread
  (unusual) are answered with the same message; the bridge shows it once.
- While a waiter's store read runs (``loading``) it collects what arrives, so that a reply
  committed between the read and the arming is neither missed nor pushed.
- A waiter ends with its answer, its timeout, or its connection (the bridge asks again
  after it reconnects, for the time that is left).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred

from claudepeers.broker.records import Message

#: What a waiter is answered: replies came (or had come), or the time was up.
REPLIES = "replies"
TIMEOUT = "timeout"


@dataclass(eq=False)
class ReplyWaiter:
    """One armed ``WaitForReply``: whose, which thread, after which id, and its answer."""

    connection: Any
    thread_id: int
    after_id: int
    answer: Deferred = field(default_factory=Deferred)
    loading: bool = True
    collected: list[Message] = field(default_factory=list)
    timer: Any = None

    def wants(self, message: Message) -> bool:
        """True for a message of this waiter's thread that came after the one waited on."""
        return message.thread_id == self.thread_id and message.id > self.after_id


class ReplyWaits:
    """The armed reply waiters of one peer.

    ``claim(connection, ids)`` (the peer's :class:`~.mailwait.MailWaits.claim`) keeps the
    peer's hooks from showing a message a waiter has taken.
    """

    def __init__(self, claim: Callable[[Any, Iterable[int]], Any] = lambda connection, ids: None) -> None:
        self._claim = claim
        self._waiters: list[ReplyWaiter] = []

    @property
    def count(self) -> int:
        """How many waiters are armed."""
        return len(self._waiters)

    def arm(self, connection: Any, thread_id: int, after_id: int) -> ReplyWaiter:
        """A new waiter; it collects arrivals until :meth:`loaded` hands it the store's view."""
        waiter = ReplyWaiter(connection, thread_id, after_id)
        self._waiters.append(waiter)
        return waiter

    def take(self, message: Message) -> bool:
        """A message the peer accepted: True when a waiter takes it (it is then not pushed)."""
        if not self._waiters or message.thread_id is None:
            return False
        taken = False
        for waiter in list(self._waiters):
            if not waiter.wants(message):
                continue
            taken = True
            self._claim(waiter.connection, [message.id])
            if waiter.loading:
                waiter.collected.append(message)
            else:
                self._answer(waiter, [message], [])
        return taken

    def loaded(self, waiter: ReplyWaiter, unread: list[Message], shown: list[dict[str, Any]]) -> bool:
        """The store's replies after the waited-on message: unread ones in full, ``shown`` ones
        (already shown to the peer) named. Answers at once if there are any; True if so."""
        if waiter not in self._waiters:
            return True  # timed out or closed meanwhile
        waiter.loading = False
        merged = {message.id: message for message in unread}
        for message in waiter.collected:
            merged.setdefault(message.id, message)
        waiter.collected = []
        if not merged and not shown:
            return False
        self._claim(waiter.connection, list(merged))
        self._answer(waiter, [merged[key] for key in sorted(merged)], shown)
        return True

    def expire(self, waiter: ReplyWaiter) -> None:
        """The waiter's time is up: it is answered ``timeout``."""
        if waiter in self._waiters:
            waiter.timer = None
            self._remove(waiter)
            waiter.answer.callback(_answer(TIMEOUT, waiter.thread_id))

    def fail(self, waiter: ReplyWaiter, failure: Any) -> None:
        """The store could not say what the thread holds: the waiter's call fails with that."""
        if waiter in self._waiters:
            self._remove(waiter)
            waiter.answer.errback(failure)

    def closed(self, connection: Any) -> None:
        """``connection`` ended: its waiters end unanswered (there is no one to answer)."""
        for waiter in [w for w in self._waiters if w.connection is connection]:
            self._remove(waiter)

    def _answer(self, waiter: ReplyWaiter, messages: list[Message], shown: list[dict[str, Any]]) -> None:
        self._remove(waiter)
        waiter.answer.callback(_answer(REPLIES, waiter.thread_id, [m.to_wire() for m in messages], shown))

    def _remove(self, waiter: ReplyWaiter) -> None:
        self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None


def _answer(outcome: str, thread_id: int, messages: list[dict[str, Any]] | None = None,
            shown: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "thread_id": thread_id, "messages": messages or [], "shown_before": shown or []}
