"""What the bridge does with a message the broker pushes: show it now, hold it, or drop it.

Pure logic, no I/O: the bridge hands every pushed or fetched message to an
:class:`Inbox` and does what it answers. The rules (DESIGN 4, "exactly once to the agent"):

- ``push`` mode (Claude Code with channels): a new message is sent at once as a channel
  notification and waits, ``pending``, for evidence that Claude Code accepted it (its
  transcript, :mod:`.transcript`); confirmed, it is shown and the Deliver answer
  ``shown=True`` acknowledges it; not confirmed in time, it falls back to ``waiting``
  (shown by the next tool result, ``check_messages`` or a prompt hook). A confirmation
  that comes late still counts while the message waits: it is never shown again.
- ``inline`` mode (Codex, Claude Code without channels, unknown clients): a new message
  waits; it is shown at the end of the agent's next tool result (bounded) or by
  ``check_messages`` (in full), and only then acknowledged.
- A message id that was already shown is never shown again: after a reconnect the
  broker pushes everything not yet acknowledged, and those ids are answered
  ``shown=True`` without showing them (which also repairs a lost acknowledgement).

Lifecycle of one message id in one bridge process::

    new --offer(push)--> pending --confirmed--> shown
    pending --not confirmed in time--> waiting --confirmed late--> shown
    new --offer(inline)--> waiting --take_*()--> shown
    shown --offer--> shown (answered "already shown", nothing printed)
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

Message = Mapping[str, Any]

#: How many shown ids we remember; far more than could be re-pushed after a reconnect.
REMEMBER_SHOWN = 50_000


class Offer(enum.Enum):
    """What the bridge must do with an offered message."""

    SHOW = "show"  # show it now (channel notification), then call shown()
    HOLD = "hold"  # it waits for the next tool result; answer shown=False
    ALREADY_SHOWN = "already-shown"  # answer shown=True, show nothing
    PENDING = "pending"  # pushed already, its confirmation awaited: answer as that push does


class ShownIds:
    """A bounded set of message ids that were shown to the agent (oldest forgotten)."""

    def __init__(self, capacity: int = REMEMBER_SHOWN) -> None:
        self._capacity = capacity
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: int) -> None:
        """Remember one id; forget the oldest beyond capacity."""
        if message_id in self._ids:
            return
        self._ids.add(message_id)
        self._order.append(message_id)
        while len(self._order) > self._capacity:
            self._ids.discard(self._order.popleft())


@dataclass
class Batch:
    """Messages taken for showing, plus how many still wait after them."""

    messages: list[Message]
    remaining: int

    @property
    def ids(self) -> list[int]:
        """The ids to acknowledge once the batch is shown."""
        return [int(message["id"]) for message in self.messages]


@dataclass
class Inbox:
    """The bridge's view of one peer's mail: what was shown, what waits.

    ``measure`` gives the shown size of a message (its rendered length), used to bound
    what goes into a tool result.
    """

    mode: str  # "push" or "inline"
    measure: Callable[[Message], int] = lambda message: len(str(message.get("body", "")))
    ready: bool = True  # push mode shows only once the agent's MCP session is initialized
    shown: ShownIds = field(default_factory=ShownIds)
    _waiting: "OrderedDict[int, Message]" = field(default_factory=OrderedDict)
    _pending: dict[int, Message] = field(default_factory=dict)

    @property
    def waiting_count(self) -> int:
        """How many messages wait to be shown."""
        return len(self._waiting)

    def offer(self, message: Message) -> Offer:
        """A message arrived (pushed or fetched): decide what to do with it."""
        message_id = int(message["id"])
        if message_id in self.shown:
            return Offer.ALREADY_SHOWN
        if message_id in self._pending:
            return Offer.PENDING
        if message_id in self._waiting:
            return Offer.HOLD
        if self.mode == "push" and self.ready and not self._waiting:
            return Offer.SHOW
        # Keep per-sender order: anything arriving behind a held message waits too.
        self._insert(message_id, message)
        return Offer.HOLD

    def hold(self, message: Message) -> bool:
        """A fetched message: keep it waiting unless already shown; True if it is new."""
        message_id = int(message["id"])
        if message_id in self.shown or message_id in self._waiting or message_id in self._pending:
            return False
        self._insert(message_id, message)
        return True

    def pushed(self, message: Message) -> None:
        """A channel notification carries this message now; its confirmation is awaited."""
        message_id = int(message["id"])
        self._waiting.pop(message_id, None)
        self._pending[message_id] = message

    def is_pending(self, message_id: int) -> bool:
        """True while a pushed message awaits its confirmation."""
        return message_id in self._pending

    def fall_back(self, message_id: int) -> bool:
        """A push was not confirmed in time: the message waits for the inline paths."""
        message = self._pending.pop(message_id, None)
        if message is None:
            return False
        self._insert(message_id, message)
        return True

    def confirm(self, message_id: int) -> str:
        """The agent's transcript shows this message: ``pending`` (it was awaited),
        ``late`` (it had fallen back and was waiting: never show it again), ``shown``
        (already shown: by a tool result, before this late confirmation), or ``unknown``."""
        if message_id in self._pending:
            where = "pending"
        elif message_id in self._waiting:
            where = "late"
        elif message_id in self.shown:
            return "shown"
        else:
            return "unknown"
        self.mark_shown([message_id])
        return where

    def mark_shown(self, ids: Iterable[int]) -> None:
        """These ids were shown to the agent (never show them again)."""
        for message_id in ids:
            self.shown.add(int(message_id))
            self._waiting.pop(int(message_id), None)
            self._pending.pop(int(message_id), None)

    def take_ready(self) -> list[Message]:
        """Push mode became ready: everything held may be shown now, in order."""
        if self.mode != "push" or not self.ready:
            return []
        return list(self._waiting.values())

    def take(self, max_messages: int, max_size: int) -> Batch:
        """The oldest waiting messages that fit the bounds (whole messages only).

        A message that does not fit is left waiting, as is everything after it, so the
        agent reads its mail in order. The caller shows the batch, then calls
        :meth:`mark_shown` with its ids.
        """
        taken: list[Message] = []
        used = 0
        for message in self._waiting.values():
            if len(taken) >= max_messages:
                break
            size = self.measure(message)
            if used + size > max_size:
                break
            taken.append(message)
            used += size
        return Batch(taken, len(self._waiting) - len(taken))

    def _insert(self, message_id: int, message: Message) -> None:
        """Hold a message, keeping ids in ascending (broker acceptance) order."""
        if not self._waiting or message_id > next(reversed(self._waiting)):
            self._waiting[message_id] = message
            return
        items = list(self._waiting.items()) + [(message_id, message)]
        items.sort(key=lambda item: item[0])
        self._waiting = OrderedDict(items)
