"""The wire of coordination and of the dashboard: sends to many, groups, path claims
(issue 14; broker/fanout.py, groups.py, claims.py) and the operator's dashboard link.

Pure data, like :mod:`claudepeers.wire.commands`, which re-exports every name.
"""

from __future__ import annotations

from twisted.protocols import amp

from claudepeers.wire.arguments import BigText, JSONValue
from claudepeers.wire.errors import (
    PEER_ERRORS,
    ClaimConflict,
    LimitExceeded,
    errors_with as _errors,
)

# --- coordination: many recipients, groups, claims (issue 14; broker/fanout.py, groups.py, claims.py) ---


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
