"""The wire: AMP commands spoken between broker, bridges and the CLI.

Pure data, no logic (STYLE habit 1). Everything here is imported by both sides, so it
imports nothing of ours but the rest of :mod:`claudepeers.wire` (the argument types in
``arguments.py``, the error tags in ``errors.py``) and the plain exceptions they carry.
The commands of coordination and the dashboard (``coordination.py``) and of approvals and
threads (``approvals.py``, ``threads.py``) live beside it; every name is re-exported here, so
``wire.SendMany`` and ``wire.UnknownPeer`` work as before.

Structured values (peer lists, messages, status) travel as JSON text in a
:class:`BigText` argument, chunked over keys (see ``arguments.py``).
"""

from __future__ import annotations

from twisted.protocols import amp

from claudepeers.wire.arguments import (  # noqa: F401 - re-exported: wire.BigText ...
    BOUND_BOX_BYTES,
    BOUND_BOX_KEYS,
    CHUNK_BYTES,
    MAX_BIG_TEXT_BYTES,
    BigText,
    JSONValue,
)
from claudepeers.wire.errors import (  # noqa: F401 - re-exported: wire.UnknownPeer ...
    APPROVAL_ERRORS,
    COMMON_ERRORS,
    PEER_ERRORS,
    AlreadyRegistered,
    AmbiguousPeer,
    AuthenticationRequired,
    BrokerUnavailable,
    ClaimConflict,
    IdentityRejected,
    InternalError,
    InvalidArgument,
    KillRefused,
    LimitExceeded,
    NameTaken,
    NotRegistered,
    PeerGone,
    PeersError,
    PermissionDenied,
    UnknownApproval,
    UnknownMessage,
    UnknownPeer,
    errors_with as _errors,
)


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


# The commands of coordination, the dashboard, approvals and threads, under their old names.
from claudepeers.wire.coordination import (  # noqa: E402,F401
    CheckPaths,
    ClaimPaths,
    JoinGroup,
    LeaveGroup,
    ListClaims,
    ListGroups,
    OpenDashboard,
    ReleasePaths,
    SendMany,
)
from claudepeers.wire.approvals import (  # noqa: E402,F401
    AnswerApproval,
    ListApprovals,
    PermissionAnswer,
    PermissionEnded,
    PermissionRequest,
)
from claudepeers.wire.threads import ReadThread, SearchMessages, WaitForReply  # noqa: E402,F401
