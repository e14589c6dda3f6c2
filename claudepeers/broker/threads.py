"""Threads of replies, waiting for a reply, and the history of a peer's own mail (DESIGN 8).

Part of the broker's logic layer (no AMP, no SQL): :class:`Threads` works on the broker's
actors and store. A reply (``Send`` with ``reply_to``) joins the thread of the message it
answers; a thread's id is the id of its first message. A peer may reply only to a message
it received or sent; anything else is refused as unknown, in the same words whether the
message does not exist or is someone else's (its existence is nobody else's business). The
operator's CLI, which is no peer, may reply to a message of the recipient's own mail.

``wait_for_reply`` arms a waiter on the peer (replywait.py); ``read_thread`` and
``search`` read the caller's own mail, sent or received. Mail addressed to the caller and
not shown to it yet is listed without its body: delivery shows it, once (a history tool
that showed it would show it twice, or have to acknowledge it for the agent).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker.peers import PeerActor
from claudepeers.broker.records import Message, NewMessage, iso
from claudepeers.broker.replywait import ReplyWaiter
from claudepeers.common.errors import InvalidArgument, UnknownMessage


#: The most messages one read_thread or search answer carries, and the defaults.
MAX_HISTORY_PAGE = 200
THREAD_PAGE = 50
SEARCH_PAGE = 20
#: Longest search text, and the most words in it.
MAX_SEARCH_CHARS = 1000
MAX_SEARCH_WORDS = 20
#: Messages indexed for search per reaping round (a search indexes what is left itself).
INDEX_PER_ROUND = 5000


class Threads:
    """Replies, reply waits and history for the broker's peers."""

    log = Logger()

    # ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
    def __init__(self, broker: Any) -> None:
        self._broker = broker

    # --- replies ------------------------------------------------------------------------

    def thread_for_reply(self, sender: PeerActor | None, recipient: PeerActor, new: NewMessage,
                         reply_to: int) -> Deferred:
        """``new`` as a reply to ``reply_to`` (with its thread); UnknownMessage if its sender
        may not answer that message."""

        def checked(head: tuple[str, str, int] | None) -> NewMessage:
            if sender is not None:
                if head is None or sender.id not in head[:2]:
                    raise UnknownMessage(_not_yours(reply_to, "reply_to"))
            elif head is None or recipient.id not in head[:2]:
                raise UnknownMessage(f"message #{reply_to} is not in the mail of {recipient.name} ({recipient.id}); "
                                     "reply_to must name a message it sent or received")
            return replace(new, reply_to=reply_to, thread_id=head[2])

        return self._head(reply_to).addCallback(checked)

    def _head(self, message_id: Any) -> Deferred:
        """(from_id, to_id, thread id) of a message, or None."""
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
            raise InvalidArgument(f"a message id is a positive number, not {message_id!r}")
        return self._broker.store.message_head(message_id)

    # --- waiting ------------------------------------------------------------------------

    @inlineCallbacks
    def wait_for_reply(self, actor: PeerActor, connection: Any, message_id: int, timeout: float) -> Any:
        """Fires with the WaitForReply answer: the replies after ``message_id`` in its thread
        that reach ``actor``, as soon as there are any, or ``timeout`` seconds later."""
        bound = self._broker.limits.max_wait_seconds
        if not 0 <= timeout <= bound:
            raise InvalidArgument(
                f"timeout_seconds must be 0 to {bound:g}, not {timeout:g} (the bound is max_wait_seconds, "
                "CLAUDE_PEERS_MAX_WAIT_SECONDS); to wait longer, wait again after a timeout"
            )
        head = yield self._head(message_id)
        if head is None or actor.id not in head[:2]:
            raise UnknownMessage(_not_yours(message_id, "message_id"))
        thread_id = head[2]
        if getattr(connection, "closed", False):
            return {"outcome": "timeout", "thread_id": thread_id, "messages": [], "shown_before": []}
        waits = actor.replies
        waiter = waits.arm(connection, thread_id, message_id)
        if timeout > 0:  # else only what the store holds now is looked at
            waiter.timer = self._broker.clock.callLater(timeout, waits.expire, waiter)
        # Armed before the read: a reply committed meanwhile is collected, not pushed.
        d = self._broker.store.replies(actor.id, thread_id, message_id, MAX_HISTORY_PAGE)
        d.addCallbacks(self._replies_loaded, self._load_failed, callbackArgs=(actor, waiter),
                       errbackArgs=(actor, waiter))
        answer = yield waiter.answer
        return answer

    def _replies_loaded(self, replies: list[Message], actor: PeerActor, waiter: ReplyWaiter) -> None:
        unread = [m for m in replies if m.acked_at is None]
        shown = [{"id": m.id, "from_id": m.from_id, "from_name": m.from_name, "shown_at": iso(m.acked_at)}
                 for m in replies if m.acked_at is not None]
        if not actor.replies.loaded(waiter, unread, shown) and waiter.timer is None:
            actor.replies.expire(waiter)

    def _load_failed(self, failure: Failure, actor: PeerActor, waiter: ReplyWaiter) -> None:
        actor.replies.fail(waiter, failure)

    def closed(self, actor: PeerActor, connection: Any) -> None:
        """A bridge connection ended: its waits end (it asks again once reconnected), and what
        they had taken is free for the peer's hooks again."""
        actor.replies.closed(connection)
        actor.waits.closed(connection)

    # --- history ------------------------------------------------------------------------

    @inlineCallbacks
    def read_thread(self, caller: PeerActor | None, message_id: int, before: int | None, limit: int | None) -> Any:
        """The thread of ``message_id`` as the caller's own mail shows it (the operator's CLI:
        all of it): the newest ``limit`` messages below ``before``, oldest first."""
        page = _page(limit, THREAD_PAGE)
        if before is not None and (not isinstance(before, int) or before <= 0):
            raise InvalidArgument(f"before must be a message id (a positive number), not {before!r}")
        head = yield self._head(message_id)
        if head is None or (caller is not None and caller.id not in head[:2]):
            if caller is None:
                raise UnknownMessage(f"there is no message #{message_id} (or it has expired)")
            raise UnknownMessage(_not_yours(message_id, "thread_id"))
        thread_id = head[2]
        participant = caller.id if caller is not None else None
        messages, more = yield self._broker.store.thread(thread_id, participant, before, page)
        return {"thread_id": thread_id, "messages": [self._entry(m, caller) for m in messages], "more": more}

    def search(self, caller: PeerActor, text: str, limit: int | None) -> Deferred:
        """The caller's own messages (sent or received) with every word of ``text``, newest first."""
        page = _page(limit, SEARCH_PAGE)
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("the search text is empty")
        if len(text) > MAX_SEARCH_CHARS:
            raise InvalidArgument(f"the search text is {len(text)} characters long; at most {MAX_SEARCH_CHARS}")
        words = self._broker.store.search_words(text)
        if not words:
            raise InvalidArgument("the search text has no words to look for (letters or digits)")
        if len(words) > MAX_SEARCH_WORDS:
            raise InvalidArgument(f"the search text has {len(words)} words; at most {MAX_SEARCH_WORDS}")
        d = self._broker.store.search(caller.id, words, page)
        return d.addCallback(lambda found: [self._entry(m, caller) for m in found])

    def _entry(self, message: Message, caller: PeerActor | None) -> dict[str, Any]:
        """A message as history shows it: with its recipient's name and whether the caller
        sent it; mail to the caller not shown to it yet, without its body."""
        entry = message.to_wire()
        recipient = self._broker.actors.get(message.to_id)
        entry["to_name"] = recipient.name if recipient is not None else message.to_id
        entry["mine"] = caller is not None and message.from_id == caller.id
        if caller is not None and message.to_id == caller.id and message.acked_at is None:
            entry["body"] = None
            entry["unread"] = True
        return entry

    def index(self) -> None:
        """Periodic (the reaper): index new mail for search."""
        d = self._broker.store.index_for_search(INDEX_PER_ROUND)
        d.addErrback(lambda f: None if getattr(f.value, "reported", False)
                     else self.log.failure("indexing mail for search failed", f))


def _not_yours(message_id: int, argument: str) -> str:
    return (f"you have no message #{message_id}: {argument} must be the id of a message you received or sent "
            "(the # number in its frame; message_id in the channel meta)")


def _page(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    if not 0 < limit <= MAX_HISTORY_PAGE:
        raise InvalidArgument(f"limit must be 1 to {MAX_HISTORY_PAGE}, not {limit}")
    return limit
