"""Waiting for mail that no one is showing: the broker's half of the rewake hook.

A Claude Code session without a working channel sees a message only at its next tool
result or prompt; while it is idle, a background hook (``claude-peers hook wait``, run
with ``asyncRewake``) waits for its peer's mail and wakes the session with it. This module
decides, for one peer, when such a waiter is answered and with what. Pure logic (no AMP,
no SQL, no clock): the actor feeds it the bridge's answers and the acknowledgements.

The rules:

- A message is *wake-worthy* once the bridge has answered that it holds it (not shown),
  or when it arrives while no bridge is connected. A message the bridge pushed and
  answered shown (a channel notification) never is, nor one still in flight to it.
- One waiter per peer: a newer ``WaitForMail`` replaces the older, which is answered
  ``replaced`` at once and exits. The newest waiter was started by the latest turn end,
  so it has its whole hook timeout ahead of it; a stale waiter (2.1.197 leaves them
  running) cannot keep the session from being woken.
- A waiter is answered as soon as some wake-worthy message was never handed to a waiter
  before, with every wake-worthy message not claimed by another live connection (up to
  its limit). Handing out claims them for that connection until it acknowledges them or
  closes; a message handed out once does not by itself wake again (a message too long
  for the hook's output would otherwise wake the agent after every turn).
- A hook's ``FetchUnread`` claims what it returns in the same way, so that a prompt hook
  and a waiter started by the same event never both show a message.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from twisted.internet.defer import Deferred

from claudepeers.broker.records import Message

#: What a waiter is answered: mail to show, a newer waiter took over, the peer ended.
MAIL = "mail"
REPLACED = "replaced"
ENDED = "ended"
#: Ids of messages handed to a waiter that we remember (far more than ever wait unread).
REMEMBER_WOKEN = 10_000


@dataclass
class _Waiter:
    """The armed WaitForMail: its connection, its answer, how many messages it takes."""

    connection: Any
    answer: Deferred
    limit: int


class MailWaits:
    """One peer's wake-worthy mail, its waiter, and which connection claimed what."""

    def __init__(self) -> None:
        self._held: dict[int, Message] = {}
        self._woken: OrderedDict[int, None] = OrderedDict()
        self._claims: dict[int, Any] = {}
        self._waiter: _Waiter | None = None

    @property
    def waiting(self) -> bool:
        """Whether a waiter is armed for this peer."""
        return self._waiter is not None

    @property
    def waiter_pid(self) -> int | None:
        """The pid of the armed waiter's process (the kernel's, SO_PEERCRED), for status."""
        creds = getattr(self._waiter.connection, "creds", None) if self._waiter is not None else None
        return getattr(creds, "pid", None)

    def wait(self, connection: Any, limit: int) -> Deferred:
        """Arm a waiter on ``connection``; fires with the answer for WaitForMail."""
        old = self._waiter
        self._waiter = _Waiter(connection, Deferred(), limit)
        if old is not None:
            old.answer.callback(_answer(REPLACED))
        answer = self._waiter.answer
        self._offer()
        return answer

    def held(self, messages: Iterable[Message]) -> set[int]:
        """Messages no one is showing now; returns the ids just handed to a waiter."""
        for message in messages:
            self._held[message.id] = message
        return self._offer()

    def shown(self, ids: Iterable[int]) -> None:
        """These messages were acknowledged: nothing is left to wake for."""
        for message_id in ids:
            self._held.pop(message_id, None)
            self._woken.pop(message_id, None)
            self._claims.pop(message_id, None)

    def bridge_attached(self) -> None:
        """A new bridge takes the backlog: it decides afresh what it holds."""
        self._held.clear()

    def claim(self, connection: Any, ids: Iterable[int]) -> list[int]:
        """The ids not claimed by another connection; claimed for ``connection`` if given."""
        free = []
        for message_id in ids:
            owner = self._claims.get(message_id)
            if owner is not None and owner is not connection:
                continue
            free.append(message_id)
            if connection is not None:
                self._claims[message_id] = connection
        return free

    def closed(self, connection: Any) -> None:
        """``connection`` ended: its claims lapse, and its waiter (if armed) with it."""
        for message_id in [i for i, owner in self._claims.items() if owner is connection]:
            del self._claims[message_id]
        if self._waiter is not None and self._waiter.connection is connection:
            self._waiter = None
        self._offer()

    def ended(self) -> None:
        """The peer's agent session ended: the waiter exits."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.answer.callback(_answer(ENDED))

    def _offer(self) -> set[int]:
        waiter = self._waiter
        if waiter is None or not self._held:
            return set()
        free = [self._held[i] for i in sorted(self._held) if self._claims.get(i) in (None, waiter.connection)]
        if not any(message.id not in self._woken for message in free):
            return set()
        page = free[: waiter.limit]
        for message in page:
            self._woken[message.id] = None
            self._claims[message.id] = waiter.connection
        while len(self._woken) > REMEMBER_WOKEN:
            self._woken.popitem(last=False)
        self._waiter = None
        waiter.answer.callback(_answer(MAIL, [m.to_wire() for m in page], len(free) - len(page)))
        return {message.id for message in page}


def _answer(outcome: str, messages: list[dict[str, Any]] | None = None, more: int = 0) -> dict[str, Any]:
    return {"outcome": outcome, "messages": messages or [], "more": more}
