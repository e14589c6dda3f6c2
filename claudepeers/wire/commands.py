"""The wire: AMP commands and error types spoken between broker, bridges and the CLI.

Pure data, no logic (STYLE habit 1). Everything here is imported by both sides, so it
imports nothing of ours but the Twisted-free box codec (:mod:`claudepeers.wire.box`).

Structured values (peer lists, messages, status) travel as JSON text in a
:class:`BigText` argument: AMP limits one value to 65,535 bytes, and ``BigText`` splits a
long value over numbered keys (``name``, ``name.1``, ``name.2``...) so that a 32 KiB
body in multi-byte UTF-8, or a list of a thousand peers, crosses safely.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.protocols import amp

# BigText chunks as the Twisted-free clients do: one layout, CHUNK_BYTES each, kept in ampbox.
from claudepeers.wire.box import CHUNK_BYTES, chunk_key, split_chunks  # noqa: F401 - CHUNK_BYTES re-exported

#: The largest BigText value accepted from the wire (bounds a hostile sender's memory).
MAX_BIG_TEXT_BYTES = 8 * 1024 * 1024
#: The largest box either end accepts (fastamp's LeanAMP checks it before buffering): the
#: largest chunked value with room for the other arguments, and keys enough for any command
#: (a dict of tiny keys costs ~150 bytes each: this caps it at a few MB).
BOUND_BOX_BYTES = MAX_BIG_TEXT_BYTES + 1024 * 1024
BOUND_BOX_KEYS = 16384


class BigText(amp.Argument):
    """A unicode string of any length up to ``MAX_BIG_TEXT_BYTES``, chunked over keys."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Write the value as ``name``, ``name.1``, ... each at most CHUNK_BYTES long."""
        value = self.retrieve(objects, amp._wireNameToPythonIdentifier(name), proto)
        if self.optional and value is None:
            return
        if not isinstance(value, str):
            raise TypeError(f"{name.decode()} must be a string, not {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > MAX_BIG_TEXT_BYTES:
            raise amp.TooLong(False, True, data[:40], name)
        strings.update(split_chunks(name, data))

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Reassemble the chunks; reject values whose chunks are missing or too many."""
        key = amp._wireNameToPythonIdentifier(name)
        first = strings.pop(name, None)
        if first is None:
            if _chunk_keys(name, strings):
                raise ValueError(f"{name.decode()} has continuation chunks but no first chunk")
            if self.optional:
                objects[key] = None
                return
            raise KeyError(name)
        parts = [first]
        total = len(first)
        index = 1
        while True:
            chunk = strings.pop(chunk_key(name, index), None)
            if chunk is None:
                break
            total += len(chunk)
            if total > MAX_BIG_TEXT_BYTES:
                raise ValueError(f"{name.decode()} is longer than {MAX_BIG_TEXT_BYTES} bytes")
            parts.append(chunk)
            index += 1
        if _chunk_keys(name, strings):
            # A gap in the numbering: without this check the value would be silently cut short.
            raise ValueError(f"{name.decode()} is missing chunk {index} of a chunked value")
        objects[key] = b"".join(parts).decode("utf-8")


def _chunk_keys(name: bytes, strings: dict) -> list[bytes]:
    """Keys of ``strings`` that look like continuation chunks of ``name`` (``name.N``)."""
    prefix = name + b"."
    return [k for k in strings if k.startswith(prefix) and k[len(prefix):].isdigit()]


#: One encoder for every value: json.dumps with options builds a new encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JSONValue(BigText):
    """Any JSON-serialisable value, carried as BigText."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Serialise the value to compact JSON before chunking."""
        key = amp._wireNameToPythonIdentifier(name)
        if key in objects and not (self.optional and objects[key] is None):
            objects[key] = _ENCODE(objects[key])
        super().toBox(name, strings, objects, proto)

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Parse the JSON after reassembly; malformed JSON is a ValueError."""
        super().fromBox(name, strings, objects, proto)
        key = amp._wireNameToPythonIdentifier(name)
        if objects[key] is not None:
            objects[key] = json.loads(objects[key])


# --- errors -----------------------------------------------------------------------------
# Plain exceptions (claudepeers.common.errors); the tags below carry them over AMP.
from claudepeers.common.errors import (  # noqa: E402  (re-exported: wire.UnknownPeer ...)
    PeersError,
    UnknownPeer,
    AmbiguousPeer,
    PeerGone,
    NotRegistered,
    AlreadyRegistered,
    InvalidArgument,
    LimitExceeded,
    NameTaken,
    IdentityRejected,
    PermissionDenied,
    AuthenticationRequired,
    KillRefused,
    BrokerUnavailable,
    InternalError,
    UnknownMessage,
)

COMMON_ERRORS: dict[type[Exception], bytes] = {
    InvalidArgument: b"INVALID_ARGUMENT",
    PermissionDenied: b"PERMISSION_DENIED",
    AuthenticationRequired: b"AUTHENTICATION_REQUIRED",
    BrokerUnavailable: b"BROKER_UNAVAILABLE",
    InternalError: b"INTERNAL_ERROR",
    NotRegistered: b"NOT_REGISTERED",
}

PEER_ERRORS: dict[type[Exception], bytes] = {
    UnknownPeer: b"UNKNOWN_PEER",
    AmbiguousPeer: b"AMBIGUOUS_PEER",
    PeerGone: b"PEER_GONE",
}


def _errors(*extra: dict[type[Exception], bytes]) -> dict[type[Exception], bytes]:
    merged = dict(COMMON_ERRORS)
    for more in extra:
        merged.update(more)
    return merged


# --- commands a client (bridge, hook, CLI) calls on the broker -------------------------


class Authenticate(amp.Command):
    """Present the TCP token; required first on TCP, accepted (and ignored) on UNIX."""

    arguments = [(b"token", amp.Unicode())]
    response: list = []
    errors = _errors()


class Hello(amp.Command):
    """Ask the broker who it is: version, pid, protocol; works before registering."""

    arguments: list = []
    response = [(b"version", amp.Unicode()), (b"pid", amp.Integer()), (b"protocol", amp.Integer())]
    errors = _errors()


class Register(amp.Command):
    """Bind this connection to the peer of an agent session (created or resumed).

    ``agent_pid``/``agent_start`` name the agent process (the ``claude``/``codex``
    ancestor); on a UNIX socket the broker checks it against the connecting process.
    ``delivery`` is ``none`` for a hook or CLI (no pushes), else the bridge's description
    of how its agent gets mail (``channel (confirmed)``, ``inline``, ...; see
    :class:`SetDelivery`). The older words ``push`` and ``inline`` are descriptions too.
    ``thread_id`` names one thread of an agent process that runs several (interactive
    Codex's shared app-server): the peer is then that thread, not the process.
    Over TCP the answer carries a ``secret``; resuming that peer over TCP later needs it
    (a TCP client never binds to a peer registered over the UNIX socket).
    """

    arguments = [
        (b"agent_pid", amp.Integer()),
        (b"agent_start", amp.Float()),
        (b"client_type", amp.Unicode()),
        (b"cwd", amp.Unicode()),
        (b"git_root", amp.Unicode(optional=True)),
        (b"git_common_dir", amp.Unicode(optional=True)),
        (b"branch", amp.Unicode(optional=True)),
        (b"tty", amp.Unicode(optional=True)),
        (b"name", amp.Unicode(optional=True)),
        (b"delivery", amp.Unicode()),
        (b"thread_id", amp.Unicode(optional=True)),
        (b"repo_id", amp.Unicode(optional=True)),
        (b"secret", amp.Unicode(optional=True)),
    ]
    response = [
        (b"peer_id", amp.Unicode()),
        (b"name", amp.Unicode()),
        (b"resumed", amp.Boolean()),
        (b"peer", JSONValue()),
        (b"secret", amp.Unicode(optional=True)),
    ]
    errors = _errors(
        {
            AlreadyRegistered: b"ALREADY_REGISTERED",
            IdentityRejected: b"IDENTITY_REJECTED",
            NameTaken: b"NAME_TAKEN",
            LimitExceeded: b"LIMIT_EXCEEDED",
        }
    )


class Attach(amp.Command):
    """Find the already-registered peer of the calling agent session without taking over.

    Used by hooks: ``agent_pid``/``agent_start`` are checked as for Register; the
    connection may then fetch and acknowledge that peer's mail but receives no pushes.
    ``thread_id`` as for Register (a Codex hook passes its input's ``session_id``).
    """

    arguments = [(b"agent_pid", amp.Integer()), (b"agent_start", amp.Float()),
                 (b"thread_id", amp.Unicode(optional=True)), (b"secret", amp.Unicode(optional=True))]
    response = [(b"peer_id", amp.Unicode()), (b"name", amp.Unicode()), (b"online", amp.Boolean())]
    errors = _errors({IdentityRejected: b"IDENTITY_REJECTED"}, PEER_ERRORS)


class Whoami(amp.Command):
    """The peer bound to this connection, as a JSON object."""

    arguments: list = []
    response = [(b"peer", JSONValue())]
    errors = _errors()


class ListPeers(amp.Command):
    """Peers in a scope (``machine``, ``directory``, ``repo``), never the caller itself."""

    arguments = [(b"scope", amp.Unicode()), (b"include_offline", amp.Boolean(optional=True))]
    response = [(b"peers", JSONValue())]
    errors = _errors()


class SetSummary(amp.Command):
    """Set what this peer is working on (at most the summary limit)."""

    arguments = [(b"summary", BigText())]
    response: list = []
    errors = _errors({LimitExceeded: b"LIMIT_EXCEEDED"})


class SetName(amp.Command):
    """Rename this peer; names are unique among live peers."""

    arguments = [(b"name", amp.Unicode())]
    response = [(b"name", amp.Unicode())]
    errors = _errors({NameTaken: b"NAME_TAKEN", LimitExceeded: b"LIMIT_EXCEEDED"})


class Send(amp.Command):
    """Send a message; answers only after it is committed.

    ``status`` is ``shown`` (the recipient's session got it, with evidence), ``woke`` (the
    idle agent was woken to take it: a rewake hook, or ``codex queue`` for an interactive
    Codex thread) or ``queued`` (it waits), with ``detail`` saying why in words a person
    understands.
    ``client_key`` (optional, at most 64 characters, unique per sender) makes the send
    safe to repeat after a lost connection: a repeat answers with the first message.
    ``reply_to`` (optional) makes it a reply: the id of a message the sender received or
    sent (else UNKNOWN_MESSAGE); the answer's ``thread_id`` is the thread it joined (a
    first message's thread is its own id).
    """

    arguments = [(b"to", amp.Unicode()), (b"body", BigText()), (b"client_key", amp.Unicode(optional=True)),
                 (b"reply_to", amp.Integer(optional=True))]
    response = [
        (b"message_id", amp.Integer()),
        (b"status", amp.Unicode()),
        (b"detail", amp.Unicode()),
        (b"to_id", amp.Unicode()),
        (b"to_name", amp.Unicode()),
        (b"thread_id", amp.Integer(optional=True)),
    ]
    errors = _errors(PEER_ERRORS, {LimitExceeded: b"LIMIT_EXCEEDED", UnknownMessage: b"UNKNOWN_MESSAGE"})


class SetDelivery(amp.Command):
    """Say how this peer's agent gets its mail now, e.g. ``channel (confirmed)``.

    A bridge keeps it up to date (a channel confirmed, or not confirmed and falling back
    to inline delivery); ``list_peers``, ``status`` and ``doctor`` show it. At most 200
    printable characters.
    """

    arguments = [(b"delivery", amp.Unicode())]
    response: list = []
    errors = _errors()


class FetchUnread(amp.Command):
    """Unacknowledged messages of this connection's peer, oldest first (paged by ``limit``)."""

    arguments = [(b"limit", amp.Integer(optional=True))]
    response = [(b"messages", JSONValue()), (b"more", amp.Integer())]
    errors = _errors()


class Acknowledge(amp.Command):
    """Mark messages shown to the agent; committed before the answer.

    ``how`` (optional) is ``shown`` (the default) or ``woke``: a rewake hook woke the idle
    agent with the messages themselves, and their senders hear ``woke``.
    """

    arguments = [(b"message_ids", amp.ListOf(amp.Integer())), (b"how", amp.Unicode(optional=True))]
    response = [(b"acknowledged", amp.Integer())]
    errors = _errors()


class WaitForMail(amp.Command):
    """Wait (a rewake hook, after Attach) until this peer has mail that no one is showing.

    Answered at once when some waits. ``outcome`` is ``mail`` (``messages``, oldest first,
    at most ``limit``; ``more`` left out), ``replaced`` (a newer waiter of the same peer
    took over: exit) or ``ended`` (the agent session ended). One waiter per peer.
    """

    arguments = [(b"limit", amp.Integer(optional=True))]
    response = [(b"outcome", amp.Unicode()), (b"messages", JSONValue()), (b"more", amp.Integer())]
    errors = _errors(PEER_ERRORS)


class MessageState(amp.Command):
    """What became of messages this peer (or the CLI) sent: queued, shown, expired."""

    arguments = [(b"message_ids", amp.ListOf(amp.Integer()))]
    response = [(b"states", JSONValue())]
    errors = _errors()


class KillPeer(amp.Command):
    """Terminate a peer's agent session (verified; SIGTERM, then SIGKILL after a grace)."""

    arguments = [(b"target", amp.Unicode())]
    response = [(b"outcome", amp.Unicode()), (b"peer_id", amp.Unicode()), (b"detail", amp.Unicode())]
    errors = _errors(PEER_ERRORS, {KillRefused: b"KILL_REFUSED"})


class Status(amp.Command):
    """Broker health and every peer (with unread counts), as a JSON object."""

    arguments: list = []
    response = [(b"status", JSONValue())]
    errors = _errors()


class Inbox(amp.Command):
    """Read (without acknowledging) a peer's stored mail: for the operator, gone peers too."""

    arguments = [(b"target", amp.Unicode()), (b"limit", amp.Integer(optional=True))]
    response = [(b"messages", JSONValue())]
    errors = _errors(PEER_ERRORS)


class RecentEvents(amp.Command):
    """The most recent events (register, leave, message, kill, error), oldest first."""

    arguments = [(b"limit", amp.Integer(optional=True))]
    response = [(b"events", JSONValue())]
    errors = _errors()


class Watch(amp.Command):
    """Subscribe this connection to live events; the broker calls ``Event`` on it."""

    arguments: list = []
    response: list = []
    errors = _errors()


class StopBroker(amp.Command):
    """Stop the broker cleanly (it answers first, then shuts down)."""

    arguments: list = []
    response = [(b"pid", amp.Integer())]
    errors = _errors()


class Ping(amp.Command):
    """Liveness probe; either side may call it."""

    arguments: list = []
    response: list = []
    errors = _errors()


# --- commands the broker calls on a bridge (remote callbacks) --------------------------


class Deliver(amp.Command):
    """Push messages to the bridge, oldest first; ``shown`` has one flag per message.

    A recipient whose inbox fills faster than its bridge answers gets several messages in
    one push (at most ``MAX_DELIVER_BATCH``): one box and one answer instead of one each.
    A flag is True when the agent has seen that message; a bridge that holds a message
    for the agent's next tool call answers False and acknowledges it later with
    :class:`Acknowledge`. ``woke`` (optional, one flag each) is True for a message not
    shown yet whose idle agent was woken to take it: the sender hears ``woke``, and the
    message stays unacknowledged until something shows it.
    """

    arguments = [(b"messages", JSONValue())]
    response = [(b"shown", amp.ListOf(amp.Boolean())), (b"woke", amp.ListOf(amp.Boolean(), optional=True))]
    errors = _errors()


#: The most messages one Deliver carries (its answer, one flag each, stays far below 64 KiB).
MAX_DELIVER_BATCH = 256


class ShownElsewhere(amp.Command):
    """Another client of the same peer (a prompt hook) showed these messages: drop them."""

    arguments = [(b"message_ids", amp.ListOf(amp.Integer()))]
    requiresAnswer = False


class Superseded(amp.Command):
    """A newer bridge of the same agent session registered; this connection is closed next.

    The older bridge should exit rather than reconnect (they would take turns otherwise).
    """

    arguments = [(b"reason", amp.Unicode())]
    requiresAnswer = False


class Event(amp.Command):
    """One event for a watching connection (``log -f``)."""

    arguments = [(b"event", JSONValue())]
    requiresAnswer = False


#: Bumped when a command changes incompatibly; clients compare it in Hello. 3: replies
#: (Send's reply_to) and the thread commands, which a bridge of 3 relies on.
PROTOCOL_VERSION = 3


# --- coordination: many recipients, groups, claims (issue 14; broker/fanout.py, groups.py, claims.py) ---

from claudepeers.common.errors import ClaimConflict  # noqa: E402  (re-exported: wire.ClaimConflict)


class SendMany(amp.Command):
    """Send one message to every peer of ``to``: ``scope:repo``, ``scope:directory``,
    ``scope:machine``, ``scope:network`` or ``group:<name>`` (never the sender itself).

    Each recipient gets its own stored message; answered once every outcome is known.
    ``recipients`` is a list of {``message_id`` (None when refused), ``to_id``, ``to_name``,
    ``status`` (``shown``, ``woke``, ``queued`` or ``refused``), ``detail``}. ``client_key``
    as for :class:`Send` (at most 47 characters: each recipient's key adds its id).
    """

    arguments = [(b"to", amp.Unicode()), (b"body", BigText()), (b"client_key", amp.Unicode(optional=True))]
    response = [(b"target", amp.Unicode()), (b"recipients", JSONValue())]
    errors = _errors(PEER_ERRORS, {LimitExceeded: b"LIMIT_EXCEEDED"})


class JoinGroup(amp.Command):
    """Join the group ``name`` (it exists while it has members); answers its member list."""

    arguments = [(b"name", amp.Unicode())]
    response = [(b"group", JSONValue())]
    errors = _errors({LimitExceeded: b"LIMIT_EXCEEDED"})


class LeaveGroup(amp.Command):
    """Leave the group ``name``; ``left`` is False when this peer was not in it."""

    arguments = [(b"name", amp.Unicode())]
    response = [(b"left", amp.Boolean())]
    errors = _errors()


class ListGroups(amp.Command):
    """Every group with its members (id, name, state), by name."""

    arguments: list = []
    response = [(b"groups", JSONValue())]
    errors = _errors()


class ClaimPaths(amp.Command):
    """Claim paths or globs of this peer's repository (relative to its top level) for
    ``ttl_seconds`` (default one hour); refused whole with ClaimConflict when one overlaps
    a live claim of another peer. Answers the claims made."""

    arguments = [(b"paths", JSONValue()), (b"reason", BigText()), (b"ttl_seconds", amp.Float(optional=True))]
    response = [(b"claims", JSONValue())]
    errors = _errors({ClaimConflict: b"CLAIM_CONFLICT", LimitExceeded: b"LIMIT_EXCEEDED"})


class ReleasePaths(amp.Command):
    """End this peer's claims on ``paths`` (the patterns as claimed), or all of them when
    ``paths`` is left out. ``released`` and ``not_held`` list the patterns."""

    arguments = [(b"paths", JSONValue(optional=True))]
    response = [(b"released", JSONValue()), (b"not_held", JSONValue())]
    errors = _errors()


class ListClaims(amp.Command):
    """Every live claim (of one repository: its common git dir), oldest first."""

    arguments = [(b"repo", amp.Unicode(optional=True))]
    response = [(b"claims", JSONValue())]
    errors = _errors()


class CheckPaths(amp.Command):
    """Which of ``paths`` (relative to the top level of the repository whose common git dir
    is ``repo``) live claims cover, leaving out the claims of this connection's own peer
    (the pre-commit guard asks this). One entry per path and claim."""

    arguments = [(b"repo", amp.Unicode()), (b"paths", JSONValue())]
    response = [(b"conflicts", JSONValue())]
    errors = _errors({LimitExceeded: b"LIMIT_EXCEEDED"})

# --- the operator's dashboard (DESIGN 9; claudepeers/broker/web/) ----------------------


class OpenDashboard(amp.Command):
    """Start the broker's dashboard on 127.0.0.1 if it is not running; answer a link with a
    one-time token (valid ``expires_in`` seconds). Refused (PermissionDenied) over TCP and to
    a process with an agent session among its ancestors: only the person may open it."""

    arguments: list = []
    response = [(b"url", amp.Unicode()), (b"expires_in", amp.Float())]
    errors = _errors()


# --- tool approvals relayed from Claude Code (claude/channel/permission) -----------------
# The bridge forwards each permission prompt Claude Code relays to its channel; the person
# answers with ``claude-peers approve|deny`` (or the dashboard); the broker pushes the answer
# back to that bridge, which tells Claude Code. See claudepeers/broker/approvals.py.


from claudepeers.common.errors import UnknownApproval  # noqa: E402  (re-exported)

APPROVAL_ERRORS: dict[type[Exception], bytes] = {UnknownApproval: b"UNKNOWN_APPROVAL"}


class PermissionRequest(amp.Command):
    """A bridge relays one of its agent's permission prompts (pending until answered or ended).

    ``request_id`` is Claude Code's (five letters); ``description`` and ``input_preview`` are
    its words for the tool call, cut short by the bridge. Only the bridge that takes the
    peer's pushes may ask; asking again with the same id replaces the request.
    """

    arguments = [
        (b"request_id", amp.Unicode()),
        (b"tool_name", amp.Unicode()),
        (b"description", BigText()),
        (b"input_preview", BigText()),
    ]
    response: list = []
    errors = _errors({LimitExceeded: b"LIMIT_EXCEEDED"})


class PermissionEnded(amp.Command):
    """The bridge saw the tool call of a pending request end (answered in the terminal,
    interrupted, or run): it leaves the list. ``reason`` says which, in words."""

    arguments = [(b"request_id", amp.Unicode()), (b"reason", amp.Unicode())]
    response = [(b"ended", amp.Boolean())]
    errors = _errors()


class ListApprovals(amp.Command):
    """Every pending approval, oldest first: request id, peer, tool, description, preview, age."""

    arguments: list = []
    response = [(b"approvals", JSONValue())]
    errors = _errors()


class AnswerApproval(amp.Command):
    """The person allows or denies a pending request (``behavior`` ``allow`` or ``deny``).

    ``request`` is a request id, or ``<peer id or name>:<request id>`` where two peers drew
    the same id. Refused (PERMISSION_DENIED) over TCP and to any process with an agent among
    its ancestors: only the person may answer. Every answer and every refusal is recorded.
    """

    arguments = [(b"request", amp.Unicode()), (b"behavior", amp.Unicode())]
    response = [(b"approval", JSONValue()), (b"detail", amp.Unicode())]
    errors = _errors(APPROVAL_ERRORS, PEER_ERRORS)


class PermissionAnswer(amp.Command):
    """The broker hands the person's answer to the bridge that asked; ``written`` is True once
    the ``notifications/claude/channel/permission`` line is in the agent's pipe."""

    arguments = [(b"request_id", amp.Unicode()), (b"behavior", amp.Unicode())]
    response = [(b"written", amp.Boolean())]
    errors = _errors()
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

