"""The message path: checking, storing, handing to the recipient's actor, answering.

Part of the broker's logic layer (no AMP, no SQL): :class:`Mail` works on the broker's
registry of actors, its store, limits and counters. ``Broker.send`` and the other message
commands delegate here. Plain callbacks on the hot path (one Deferred per send, the
answer): this runs for every message.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterable, Protocol

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker.peers import PeerActor
from claudepeers.broker.records import CLI_ID, GONE, Message, NewMessage, iso
from claudepeers.broker.ratelimit import RateLimiter
from claudepeers.common.errors import InvalidArgument, LimitExceeded, PeerGone
from claudepeers.common.settings import Limits



def check_body(body: Any, limit: int, counters: dict[str, int]) -> int:
    """The size in bytes of a body any send may carry (to one peer or to many), or the
    error saying why it may not."""
    if not isinstance(body, str) or not body.strip():
        raise InvalidArgument("the message is empty")
    if "\x00" in body:
        # PostgreSQL's text cannot hold it (and no agent means it): refused alike on both engines.
        raise InvalidArgument("the message contains a NUL character (U+0000)")
    size = len(body.encode("utf-8"))
    if size > limit:
        counters["refused"] += 1
        raise LimitExceeded(f"message is {size} bytes; the limit is {limit} (max_body_bytes, CLAUDE_PEERS_MAX_BODY_BYTES)")
    return size

class MailHost(Protocol):
    """What the message path needs of the broker (:class:`~claudepeers.broker.core.Broker`
    is one): its actors, store, limits, counters, clock and target resolution. Declared
    here so that mail does not import the broker that owns it."""

    actors: dict[str, PeerActor]
    store: Any
    #: This broker's host (the sending host a message keeps) and its threads (threads.py).
    host: str
    threads: Any
    limits: Limits
    rate: RateLimiter
    counters: dict[str, int]

    def now(self) -> float:
        """The broker clock's time."""

    def emit(self, kind: str, peer_id: str | None, detail: str, **extra: Any) -> None:
        """Record one event (the live log, the events table)."""

    def resolve(self, target: str, allow_gone: bool = False, caller: PeerActor | None = None) -> PeerActor:
        """The peer a target names, or an error that lists the candidates."""


class Mail:
    """Sending, fetching and acknowledging messages between the broker's peers."""

    log = Logger()

    def __init__(self, broker: MailHost) -> None:
        self._broker = broker

    def send(self, sender: PeerActor | None, target: str, body: str, client_key: str | None = None,
             verified: bool = True, reply_to: int | None = None) -> Deferred:
        """Commit a message and report what happened: fires with a dict for the Send answer.

        With ``client_key`` a repeat of the same send (after a lost connection) is answered
        with the first message and stores and pushes nothing. With ``reply_to`` it joins
        that message's thread, if its sender may answer it (threads.py). (Plain callbacks
        rather than inlineCallbacks: this runs for every message.)
        """
        try:
            new, recipient = self._checked(sender, target, body, client_key, verified)
            if reply_to is not None:
                threaded = self._broker.threads.thread_for_reply(sender, recipient, new, reply_to)
        except Exception:
            return fail()
        answered: Deferred = Deferred()
        if reply_to is not None:
            threaded.addCallback(self._store, client_key, recipient, answered).addErrback(answered.errback)
            return answered
        self._store(new, client_key, recipient, answered)
        return answered

    def _store(self, new: NewMessage, client_key: str | None, recipient: PeerActor, answered: Deferred) -> None:
        if client_key is None:
            stored = self._broker.store.add_message(new)
            stored.addCallback(self._stored, recipient, answered)
        else:
            stored = self._broker.store.add_message_once(new, client_key)
            stored.addCallback(self._stored_once, recipient, answered)
        stored.addErrback(self._not_stored, answered)

    def _checked(
        self, sender: PeerActor | None, target: str, body: str, client_key: str | None, verified: bool = True,
    ) -> tuple[NewMessage, PeerActor]:
        """Check a send against the rules and limits; the message to store and its recipient."""
        if client_key is not None and not (0 < len(client_key) <= 64 and client_key.isprintable()):
            raise InvalidArgument("client_key must be 1 to 64 printable characters")
        size = check_body(body, self._broker.limits.max_body_bytes, self._broker.counters)
        recipient = self._broker.resolve(target, caller=sender)
        if sender is not None and recipient is sender:
            raise InvalidArgument("you cannot send a message to yourself")
        if recipient.unread >= self._broker.limits.max_unread:
            self._broker.counters["refused"] += 1
            raise LimitExceeded(
                f"{recipient.name} already has {recipient.unread} unread messages; the limit is "
                f"{self._broker.limits.max_unread} (max_unread, CLAUDE_PEERS_MAX_UNREAD)"
            )
        now = self._broker.now()
        sender_key = sender.id if sender is not None else CLI_ID
        guard = getattr(self._broker.store, "guard", None)
        refusal = guard.room_for(sender_key, recipient.id, recipient.name, size) if guard is not None else None
        if refusal is not None:  # the database's bound or a quota of stored unread bytes
            self._broker.counters["refused"] += 1
            raise LimitExceeded(refusal)
        if not self._broker.rate.allow(sender_key, now):
            self._broker.counters["refused"] += 1
            raise LimitExceeded(
                f"more than {self._broker.limits.messages_per_minute} messages in a minute from {sender_key} "
                "(messages_per_minute, CLAUDE_PEERS_MESSAGES_PER_MINUTE); wait and retry"
            )
        if sender is None:
            new = NewMessage(CLI_ID, "cli", "", "", "cli", False, recipient.id, body, now, from_host=self._broker.host)
        else:
            record = sender.record
            new = NewMessage(record.id, record.name, record.summary, record.cwd, record.client_type, verified,
                             recipient.id, body, now, from_host=self._broker.host)
        return new, recipient

    def _stored_once(self, result: tuple[Message, bool], recipient: PeerActor, answered: Deferred) -> None:
        message, stored_now = result
        if not stored_now:
            answered.callback(self._repeated(message))
        else:
            self._stored(message, recipient, answered)

    def _stored(self, message: Message, recipient: PeerActor, answered: Deferred) -> None:
        """The message is committed: hand it to its recipient; answer once that says how it went."""
        self._broker.counters["sent"] += 1
        guard = getattr(self._broker.store, "guard", None)
        if guard is not None:
            body = message.body
            guard.stored(message.from_id, message.to_id, len(body) if body.isascii() else len(body.encode("utf-8")))
        recipient.accept(message, partial(self._sent, answered, message, recipient))

    def _not_stored(self, failure: Failure, answered: Deferred) -> None:
        if not answered.called:
            answered.errback(failure)
        else:  # the answer is out; what failed after it can only be logged
            self.log.failure("after answering a send", failure)

    def _sent(self, answered: Deferred, message: Message, recipient: PeerActor, status: str, detail: str) -> None:
        if status in ("shown", "woke"):
            self._broker.counters[status] = self._broker.counters.get(status, 0) + 1
        self._broker.emit("message", message.from_id, f"{message.from_name} -> {recipient.name}: {status}",
                  message_id=message.id, to_id=recipient.id)
        answered.callback({"message_id": message.id, "status": status, "detail": detail,
                           "to_id": recipient.id, "to_name": recipient.name, "thread_id": message.thread_id or message.id})

    def _repeated(self, message: Any) -> dict[str, Any]:
        """The answer to a repeated send: what became of the first one."""
        recipient = self._peer(message.to_id)
        name = recipient.name if recipient is not None else message.to_id
        if message.acked_at is not None:
            status, detail = "shown", f"already sent as message {message.id} and shown to {name}"
        else:
            status, detail = "queued", f"already sent as message {message.id}; it waits for {name}"
        return {"message_id": message.id, "status": status, "detail": detail, "to_id": message.to_id, "to_name": name,
                "thread_id": message.thread_id or message.id}

    def _peer(self, peer_id: str) -> Any:
        """A peer of this host, else of another host sharing the database, else None."""
        actor = self._broker.actors.get(peer_id)
        network = self._broker.network
        if actor is None and network is not None:
            return network.remote.get(peer_id)
        return actor

    def fetch_unread(self, actor: PeerActor, limit: int | None, claimer: Any = None) -> Deferred:
        """Unacknowledged messages of ``actor`` (oldest first) and how many more there are.

        Messages a rewake hook (or another hook) is showing right now are left out; a hook
        connection (``claimer``) claims what it gets until it acknowledges or closes.
        """
        if limit is not None and limit <= 0:
            raise InvalidArgument("limit must be a positive number")
        page = min(limit or 100, 1000)
        d = self._broker.store.unread(actor.id, page + 1)

        def shape(messages: list) -> tuple[list[dict[str, Any]], int]:
            more = max(0, actor.unread - page) if len(messages) > page else 0
            free = set(actor.waits.claim(claimer, [m.id for m in messages[:page]]))
            return [m.to_wire() for m in messages[:page] if m.id in free], more

        return d.addCallback(shape)

    @inlineCallbacks
    def acknowledge(self, actor: PeerActor, message_ids: Iterable[int], via: Any = None, how: str | None = None) -> Any:
        """Mark messages shown; tells the peer's bridge when another client (a hook) showed them.

        ``how`` is ``shown`` (the default) or ``woke``: a rewake hook woke the idle agent with
        the messages, and their senders hear ``woke``.
        """
        ids = list(message_ids)
        if len(ids) > 10_000:
            raise LimitExceeded("at most 10000 message ids per acknowledgement")
        if how not in (None, "shown", "woke"):
            raise InvalidArgument(f"how must be shown or woke, not {how!r}")
        network = self._broker.network
        if how == "woke" and network is not None:
            yield network.before_woke(actor, ids)  # senders of other hosts hear woke, not shown
        marked = yield self._broker.store.acknowledge(actor.id, ids, self._broker.now())
        actor.acknowledged(marked, how or "shown")
        bridge = actor.connection
        if marked and bridge is not None and via is not bridge and hasattr(bridge, "shown_elsewhere"):
            bridge.shown_elsewhere(marked)
        return len(marked)

    def wait_for_mail(self, actor: PeerActor, connection: Any, limit: int | None) -> Deferred:
        """A rewake hook's wait for mail no one shows (see mailwait.py); one per peer."""
        if limit is not None and not 0 < limit <= 1000:
            raise InvalidArgument("limit must be 1 to 1000")
        if actor.state == GONE:
            raise PeerGone(f"peer {actor.id} ({actor.name}) has ended")
        return actor.waits.wait(connection, limit or 50)

    @inlineCallbacks
    def message_states(self, sender: PeerActor | None, message_ids: Iterable[int]) -> Any:
        """What became of messages the caller sent: shown, queued (and where), or unknown."""
        sender_id = sender.id if sender is not None else CLI_ID
        ids = list(message_ids)
        found = yield self._broker.store.message_states(sender_id, ids)
        states = {}
        for message_id in ids:
            if message_id not in found:
                states[str(message_id)] = {"state": "unknown", "detail": "no such message from you (or expired)"}
                continue
            to_id, acked_at = found[message_id]
            recipient = self._peer(to_id)
            if acked_at is not None:
                states[str(message_id)] = {"state": "shown", "at": iso(acked_at), "to_id": to_id}
            else:
                where = recipient.state if recipient is not None else GONE
                states[str(message_id)] = {"state": "queued", "recipient_state": where, "to_id": to_id}
        return states

    def inbox(self, target: str, limit: int | None) -> Deferred:
        """The operator's read-only view of a peer's mail (gone peers too)."""
        actor = self._broker.resolve(target, allow_gone=True)
        return self._broker.store.inbox(actor.id, min(limit or 50, 1000)).addCallback(
            lambda messages: [m.to_wire() for m in messages]
        )
