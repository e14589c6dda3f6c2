"""The wire of tool approvals: Claude Code's permission prompts, relayed through the broker
to the person and back (broker/approvals.py).

Pure data, like :mod:`claudepeers.wire.commands`, which re-exports every name.
"""

from __future__ import annotations

from twisted.protocols import amp

from claudepeers.wire.arguments import BigText, JSONValue
from claudepeers.wire.errors import (
    APPROVAL_ERRORS,
    PEER_ERRORS,
    LimitExceeded,
    errors_with as _errors,
)

# --- tool approvals relayed from Claude Code (claude/channel/permission) -----------------
# The bridge forwards each permission prompt Claude Code relays to its channel; the person
# answers with ``claude-peers approve|deny`` (or the dashboard); the broker pushes the answer
# back to that bridge, which tells Claude Code. See claudepeers/broker/approvals.py.


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
