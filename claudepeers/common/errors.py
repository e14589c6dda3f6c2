"""The errors a broker command can answer with: plain exceptions, no AMP.

The broker's actors raise these; :mod:`claudepeers.wire.commands` maps each to the AMP tag
that carries it to the caller (and back into the same type there), so nothing above the wire
imports Twisted's AMP to fail.
"""

from __future__ import annotations

class PeersError(Exception):
    """Base of the errors a broker command can answer with."""


class UnknownPeer(PeersError):
    """The target names no peer; the message lists the candidates."""


class AmbiguousPeer(PeersError):
    """The target matches several peers; the message lists them."""


class PeerGone(PeersError):
    """The target peer's agent session has ended."""


class NotRegistered(PeersError):
    """The command needs a registered peer on this connection."""


class AlreadyRegistered(PeersError):
    """This connection is already bound to a peer."""


class InvalidArgument(PeersError):
    """An argument is malformed, of the wrong type or out of range."""


class LimitExceeded(PeersError):
    """A configured limit (size, rate, inbox) was hit; the message names the limit."""


class NameTaken(PeersError):
    """Another live peer already uses that name."""


class IdentityRejected(PeersError):
    """The kernel's view of the connecting process does not support the claimed identity."""


class PermissionDenied(PeersError):
    """The connection belongs to another user, or the command is not allowed to it."""


class AuthenticationRequired(PeersError):
    """A TCP connection must present the token before any other command."""


class KillRefused(PeersError):
    """kill_peer refused: the target is the caller, elsewhere, or no longer the agent."""


class BrokerUnavailable(PeersError):
    """The broker is shutting down or its store failed; retry later."""


class InternalError(PeersError):
    """An unexpected failure inside the broker; it was logged there."""


class UnknownApproval(PeersError):
    """No pending tool approval has that request id (answered, ended, or never asked)."""


class UnknownMessage(PeersError):
    """A message id names no message of the caller's own mail (none, someone else's, expired)."""


# --- coordination (issue 14) ------------------------------------------------------------


class ClaimConflict(PeersError):
    """A claim overlaps a live claim of another peer; the message names the holder and its reason."""
