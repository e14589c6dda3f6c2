"""Peer actors: one object per peer that owns its record, its connection and its pushes.

Lifecycle (one small state machine; see docs/architecture.md):

    offline --attach(conn)--> loading --backlog read--> online
    online/loading --detach(conn)--> offline
    offline/online --agent process ended (pid + start time)--> gone   (final)

While online, the actor pushes its inbox to the bridge in the order the broker
committed it: first every unacknowledged message from the store (again after every
reconnect, so nothing pushed to a lost connection is lost), then new ones as they are
accepted. One push is in flight at a time and carries everything queued so far (up to
``MAX_DELIVER_BATCH`` messages): an idle peer gets each message at once, a busy one gets
its backlog in a few pushes instead of one box and one answer per message. Each message
of a push answered ``shown`` is acknowledged in the store (one write per push); one
answered ``held`` waits for the bridge's own Acknowledge.

A sender waits for its message to be shown for at most ``delivery_wait`` seconds. Every
wait has the same length, so the deadlines come in the order they were set: one queue
and one timer per actor instead of a timer per message.

The actor knows neither AMP nor SQL: it is handed a store and a connection object with
``deliver(messages: list[dict]) -> Deferred[list[bool]]`` and ``close(reason)``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionClosed, ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker.mailwait import MailWaits
from claudepeers.broker.records import GONE, OFFLINE, ONLINE, Message, OfRecord, PeerRecord
from claudepeers.broker.replywait import ReplyWaits

#: Pushes in flight on one connection; what arrives meanwhile goes into the next push.
PUSHES_IN_FLIGHT = 1
#: The most messages in one push (wire.MAX_DELIVER_BATCH; the actor does not import the wire).
MAX_PUSH_MESSAGES = 256
#: Body characters in one push beyond which the rest waits for the next (JSON may grow a
#: character to six bytes; BigText takes 8 MiB, so a push stays well inside it).
MAX_PUSH_CHARS = 512 * 1024

#: The longest pause between attempts to record acknowledgements while the database is away.
ACK_RETRY_MAX_SECONDS = 5.0

#: The words a sender hears (the delivery contract of issue 10).
SHOWN = "shown"
WOKE = "woke"
QUEUED = "queued"


class PeerConnection(Protocol):
    """What an actor needs of the connection of its bridge."""

    delivery: str  # "push" or "inline"

    def deliver(self, messages: list[dict[str, Any]]) -> Deferred:
        """Push messages; fires with one flag each: True when shown, WOKE when the agent was
        woken to take it, False when held for later."""

    def close(self, reason: str) -> None:
        """Drop the connection (another one of the same agent session replaced it)."""


class PeerActor(OfRecord):
    """The broker's live object for one peer."""

    log = Logger()

    def __init__(
        self,
        record: PeerRecord,
        store: Any,
        clock: Any,
        delivery_wait: float,
        unread: int = 0,
        on_change: Callable[[], Any] | None = None,
    ) -> None:
        self.record = record
        self._on_change = on_change
        self.unread = unread
        self._store = store
        self._clock = clock
        self._delivery_wait = delivery_wait
        self._connection: PeerConnection | None = None
        self._generation = 0
        self._loading = False
        self._arrived_while_loading: list[Message] = []
        self._queue: deque[Message] = deque()
        self._in_flight = 0
        self._waiters: dict[int, Callable[[str, str], Any]] = {}
        self._deadlines: deque[tuple[float, int]] = deque()
        self._timer: Any = None
        self.delivery = "push"
        #: Mail no one shows, for the rewake hook's WaitForMail (see mailwait.py).
        self.waits = MailWaits()
        #: The peer's wait_for_reply calls (see replywait.py); what they take is not pushed.
        self.replies = ReplyWaits(self.waits.claim)
        self.bridge_pid: int | None = None  # the process of the current bridge connection (UNIX only)
        #: Shown messages whose acknowledgement the database has not taken yet, and its retry.
        self._unrecorded: set[int] = set()
        self._ack_retry: Any = None
        self._ack_delay = 0.0

    # --- facts --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages waiting for a push (the dashboard's queue depth)."""
        return len(self._queue)

    @property
    def connection(self) -> PeerConnection | None:
        """The bridge connection pushes go to, if any."""
        return self._connection

    def update(self, **changes: Any) -> PeerRecord:
        """Replace fields of the record; returns the new record (to be saved by the caller)."""
        self.record = replace(self.record, **changes)
        if self._on_change is not None:
            self._on_change()  # the broker's index of names goes stale
        return self.record

    # --- connection lifecycle --------------------------------------------------------------

    def attach(self, connection: PeerConnection, now: float) -> Deferred:
        """Bind a (new) bridge connection and push the backlog; replaces an older connection."""
        old = self._connection
        self._generation += 1
        generation = self._generation
        self._connection = connection
        self.delivery = connection.delivery
        self._queue.clear()
        self._in_flight = 0
        self._loading = True
        self._arrived_while_loading = []
        self.waits.bridge_attached()
        self.update(state=ONLINE, last_seen=now, gone_at=None)
        if old is not None and old is not connection:
            old.close("replaced by a newer connection of the same agent session")
        d = self._store.unread(self.id)
        d.addCallback(self._backlog_loaded, generation)
        return d

    def _backlog_loaded(self, backlog: list[Message], generation: int) -> None:
        if generation != self._generation:
            return
        merged = {m.id: m for m in backlog}
        for message in self._arrived_while_loading:
            merged.setdefault(message.id, message)
        self._arrived_while_loading = []
        self._loading = False
        self._queue.extend(merged[key] for key in sorted(merged))
        self._pump()

    def detach(self, connection: PeerConnection, now: float) -> bool:
        """Forget ``connection`` if it is the current one; True when the peer went offline."""
        if connection is not self._connection:
            return False
        self._connection = None
        self._generation += 1
        self._queue.clear()
        self._in_flight = 0
        self._loading = False
        if self.record.state != GONE:
            self.update(state=OFFLINE, last_seen=now)
        return True

    def mark_gone(self, now: float) -> None:
        """The agent session has ended; the record stays (with its mail) for retention."""
        connection = self._connection
        self._connection = None
        self._generation += 1
        self._queue.clear()
        self.update(state=GONE, gone_at=now, last_seen=now)
        if connection is not None:
            connection.close("the agent session has ended")
        self.waits.ended()
        for message_id in list(self._waiters):
            self._resolve(message_id, QUEUED, f"{self.name} has ended; the message is kept in its inbox")

    # --- messages -------------------------------------------------------------------------------

    def accept(self, message: Message, outcome: Callable[[str, str], Any]) -> None:
        """Take a committed message; ``outcome(status, detail)`` is called once, for the sender.

        (A callable rather than a Deferred: this runs for every message, and the sender's
        answer is one Deferred already.)
        """
        self.unread += 1
        if self.replies.take(message):
            # A wait_for_reply call answers with it; the bridge acknowledges it once shown.
            self._await(message.id, outcome)
            return
        if self._connection is None:
            if message.id in self.waits.held([message]):
                self._await(message.id, outcome)  # a rewake hook shows it and acknowledges
                return
            outcome(QUEUED, f"{self.name} is offline (reconnecting); it gets the message when it is back")
            return
        if self._loading:
            self._arrived_while_loading.append(message)
        else:
            self._queue.append(message)
        self._await(message.id, outcome)
        if not self._loading:
            self._pump()

    def _await(self, message_id: int, outcome: Callable[[str, str], Any]) -> None:
        """The sender hears what became of the message, at the latest after delivery_wait."""
        self._waiters[message_id] = outcome
        self._deadlines.append((self._clock.seconds() + self._delivery_wait, message_id))
        if self._timer is None:
            self._timer = self._clock.callLater(self._delivery_wait, self._expire)

    def _expire(self) -> None:
        """Answer the senders whose wait is over; sleep until the next deadline."""
        self._timer = None
        now = self._clock.seconds()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, message_id = deadlines.popleft()
            self._resolve(message_id, QUEUED, f"pushed to {self.name}; not shown yet (no answer from its bridge in time)")
        if deadlines:
            self._timer = self._clock.callLater(deadlines[0][0] - now, self._expire)

    def _resolve(self, message_id: int, status: str, detail: str) -> None:
        outcome = self._waiters.pop(message_id, None)
        if outcome is not None:
            outcome(status, detail)

    def _pump(self) -> None:
        connection = self._connection
        if connection is None:
            return
        generation = self._generation
        queue = self._queue
        while queue and self._in_flight < PUSHES_IN_FLIGHT:
            batch = [queue.popleft()]
            chars = len(batch[0].body)
            while queue and len(batch) < MAX_PUSH_MESSAGES and chars + len(queue[0].body) <= MAX_PUSH_CHARS:
                message = queue.popleft()
                chars += len(message.body)
                batch.append(message)
            self._in_flight += 1
            d = connection.deliver([message.to_wire() for message in batch])
            d.addCallbacks(
                self._pushed, self._push_failed,
                callbackArgs=(batch, generation), errbackArgs=(batch, generation),
            )

    def _pushed(self, shown: list[Any], batch: list[Message], generation: int) -> None:
        if generation != self._generation:
            return
        self._in_flight -= 1
        if len(shown) != len(batch):
            # Unanswered messages stay unacknowledged: pushed again after a reconnect.
            self.log.warn("bridge of {peer} answered {n} flags for a push of {m} messages",
                          peer=self.id, n=len(shown), m=len(batch))
        acknowledged = [message.id for message, flag in zip(batch, shown) if flag is True]
        if acknowledged:
            # Queued before any sender hears "shown": a read the sender makes next
            # (reads see every write queued before them) finds the message shown.
            d = self._store.acknowledge(self.id, acknowledged, self._clock.seconds())
            d.addCallbacks(self.acknowledged, self._ack_failed, errbackArgs=(acknowledged,))
        held = [message for message, flag in zip(batch, shown) if not flag]
        # A held message handed to a rewake hook keeps its sender waiting for the hook's
        # acknowledgement (woke), at most delivery_wait.
        to_waiter = self.waits.held(held) if held else set()
        for message, flag in zip(batch, shown):
            if flag is True:
                self._resolve(message.id, SHOWN, f"{self.name} has been shown the message")
            elif flag == WOKE:
                # Still unacknowledged: the turn it woke shows it (prompt hook, tool result).
                self._resolve(message.id, WOKE, f"{self.name} was idle and has been woken to read it")
            elif message.id not in to_waiter:
                self._resolve(message.id, QUEUED, self.held_reason())
        self._pump()

    def _push_failed(self, failure: Failure, batch: list[Message], generation: int) -> None:
        if generation != self._generation or failure.check(ConnectionClosed, ConnectionLost, ConnectionDone):
            # A lost connection fails every push in flight; detach handles it (no log line each).
            return None
        self._in_flight -= 1
        # The bridge refused the push (it stays unacknowledged and is pushed again on the
        # next connection); a lost connection is handled by detach.
        self.log.warn("push of messages {first}..{last} to {peer} failed: {err}", first=batch[0].id,
                      last=batch[-1].id, peer=self.id, err=failure.getErrorMessage())
        self._pump()
        return None

    def _ack_failed(self, failure: Failure, message_ids: list[int]) -> None:
        """The bridge showed them but the database is away (restarting, a partition): keep
        them and record them when it is back (else they would stay unread, pushed again)."""
        if not self._ack_delay and not getattr(failure.value, "reported", False):  # the first failure only
            self.log.warn("acknowledging messages of {peer} failed ({err}); retrying until the database takes it",
                          peer=self.id, err=failure.getErrorMessage())
        self._unrecorded.update(message_ids)
        if self._ack_retry is None or not self._ack_retry.active():
            self._ack_delay = min(ACK_RETRY_MAX_SECONDS, self._ack_delay * 2 if self._ack_delay else 0.25)
            self._ack_retry = self._clock.callLater(self._ack_delay, self._record_acks)

    def stop(self) -> None:
        """The broker stops: no more retries of acknowledgements (they stay unread in the
        store and the next broker pushes them again)."""
        if self._ack_retry is not None and self._ack_retry.active():
            self._ack_retry.cancel()

    def _record_acks(self) -> None:
        ids, self._unrecorded = sorted(self._unrecorded), set()
        d = self._store.acknowledge(self.id, ids, self._clock.seconds())
        d.addCallbacks(self._acks_recorded, self._ack_failed, errbackArgs=(ids,))

    def _acks_recorded(self, marked: list[int]) -> list[int]:
        if not self._unrecorded:
            self._ack_delay = 0.0
        return self.acknowledged(marked)

    def acknowledged(self, marked: list[int], how: str = "shown") -> list[int]:
        """Messages newly marked shown in the store (by a push answer or an Acknowledge).

        ``how`` is ``woke`` when a rewake hook woke the idle agent with them.
        """
        self.unread = max(0, self.unread - len(marked))
        self.waits.shown(marked)
        if how == WOKE:
            for message_id in marked:
                self._resolve(message_id, WOKE, f"{self.name} was idle and has been woken with the message")
            return marked
        for message_id in marked:
            self._resolve(message_id, SHOWN, f"{self.name} has been shown the message")
        return marked

    def held_reason(self) -> str:
        """Why a message the bridge holds is not shown yet, in a person's words."""
        where = f"held for {self.name}'s next tool call or prompt"
        if "unconfirmed" in self.delivery or "not confirmed" in self.delivery:
            return f"channel push not confirmed; {where}"
        return where
