"""The wire of threads (issue 14): waiting for a reply, reading a thread, searching one's own
mail (broker/threads.py, replywait.py).

Pure data, like :mod:`claudepeers.wire.commands`, which re-exports every name.
"""

from __future__ import annotations

from twisted.protocols import amp

from claudepeers.wire.arguments import JSONValue
from claudepeers.wire.errors import UnknownMessage, errors_with as _errors

# --- threads (issue 14): replies, waiting for a reply, the history of one's own mail -----
# A message id in these is the ``#N`` of a frame; a thread's id is its first message's id.


class WaitForReply(amp.Command):
    """Wait (a bridge, for its agent's tool call) for replies after ``message_id`` in its thread.

    ``message_id`` must be a message this peer sent or received. Answered as soon as a reply
    to this peer with a higher id is in that thread (those that are, if several) or after
    ``timeout_seconds`` (0 to the broker's max_wait_seconds). ``outcome`` is ``replies``
    (``messages``: not shown before, in full, oldest first; ``shown_before``: replies already
    shown to the agent, named by id, sender and when) or ``timeout``. A returned message is
    not pushed: the bridge acknowledges it once its agent has it. One per tool call; several
    may wait at once; each ends with its connection (the bridge asks again after reconnecting).
    """

    arguments = [(b"message_id", amp.Integer()), (b"timeout_seconds", amp.Float())]
    response = [(b"outcome", amp.Unicode()), (b"thread_id", amp.Integer()), (b"messages", JSONValue()),
                (b"shown_before", JSONValue())]
    errors = _errors({UnknownMessage: b"UNKNOWN_MESSAGE"})


class ReadThread(amp.Command):
    """The thread of ``thread_id`` (a thread id or any message id in it), oldest first.

    A peer gets the messages it sent or received (mail to it not shown yet comes without its
    body, ``unread`` true: delivery shows it); the CLI, every message. The newest ``limit``
    (default 50, at most 200) below ``before`` (if given); ``more`` counts the earlier ones.
    Each message carries ``to_name`` and ``mine`` (sent by the caller).
    """

    arguments = [(b"thread_id", amp.Integer()), (b"before", amp.Integer(optional=True)),
                 (b"limit", amp.Integer(optional=True))]
    response = [(b"thread_id", amp.Integer()), (b"messages", JSONValue()), (b"more", amp.Integer())]
    errors = _errors({UnknownMessage: b"UNKNOWN_MESSAGE"})


class SearchMessages(amp.Command):
    """This peer's messages (sent or received) containing every word of ``text``, newest first.

    A word also matches the longer words it begins. At most ``limit`` (default 20, at most
    200); shaped as in :class:`ReadThread`.
    """

    arguments = [(b"text", amp.Unicode()), (b"limit", amp.Integer(optional=True))]
    response = [(b"messages", JSONValue())]
    errors = _errors()
